"""caller_identification and publisher_identification (WAMP Advanced Profile), asked for by the
client or forced by the caller's role (`disclose` in its permissions)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.wampclient import raw_callee_and_caller, raw_connect

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def node(spread):
    """Every test here runs on one node and on two nodes of a cluster, its clients spread."""
    return spread


@ensure
async def test_caller_disclosed_on_request_only(node):
    callee, caller, reg_id = await raw_callee_and_caller(node.url, "com.example.who")
    caller.send([48, 1, {}, "com.example.who"])
    inv = await callee.recv()
    assert inv[3] == {}
    caller.send([48, 2, {"disclose_me": True}, "com.example.who"])
    inv = await callee.recv()
    session = node.table.fetch(inv[3]["caller"])
    assert inv[3] == {"caller": session.id, "caller_authid": session.authid, "caller_authrole": "anonymous"}
    assert session is not node.realm_router("realm1").dealer.lookup("com.example.who").callee


@ensure
async def test_callee_may_ask_for_the_caller(node):
    callee = await raw_connect(node.url)
    caller = await raw_connect(node.url)
    await callee.hello()
    welcome = await caller.hello()
    callee.send([64, 1, {"disclose_caller": True}, "com.example.who"])
    await callee.recv()
    caller.send([48, 1, {}, "com.example.who"])
    inv = await callee.recv()
    assert inv[3]["caller"] == welcome[1]


@ensure
async def test_publisher_disclosed_on_request(node):
    sub = await raw_connect(node.url)
    pub = await raw_connect(node.url)
    await sub.hello()
    welcome = await pub.hello()
    sub.send([32, 1, {}, "com.example.t"])
    await sub.recv()
    pub.send([16, 1, {}, "com.example.t", ["anon"]])
    pub.send([16, 2, {"disclose_me": True}, "com.example.t", ["named"]])
    first, second = await sub.recv(), await sub.recv()
    assert first[3] == {} and first[4] == ["anon"]
    assert second[3] == {"publisher": welcome[1], "publisher_authid": welcome[2]["authid"],
                         "publisher_authrole": "anonymous"}


@ensure
async def test_role_forces_disclosure(make_spread):
    perms = [{"uri": "com.", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"],
              "disclose": ["caller", "publisher"]}]
    node = await make_spread(realms=[{"uri": "realm1", "roles": {"anonymous": {"permissions": perms}}}])
    callee, caller, _ = await raw_callee_and_caller(node.url, "com.example.audited")
    caller.send([48, 1, {}, "com.example.audited"])
    inv = await callee.recv()
    assert inv[3]["caller_authrole"] == "anonymous" and "caller" in inv[3]
    callee.send([32, 2, {}, "com.example.t"])
    await callee.recv()
    caller.send([16, 2, {}, "com.example.t"])
    event = await callee.recv()
    assert event[0] == 36 and "publisher" in event[3]
