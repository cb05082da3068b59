"""Rate and quota windows, expiry and idle timeout, over real sockets (issue 4, points 1-3)."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions

from tests.wampclient import connect, raw_callee_and_caller, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred


def _realm(**limits) -> dict:
    return {"realms": [{"uri": "realm1", "limits": limits}]}


@ensure
async def test_rate_window_refuses_the_extra_request_and_the_next_window_succeeds(make_node, serializer):
    node = make_node(**_realm(rate={"limit": 3, "duration": 0.5}))
    client = await connect(node.url, serializer)
    await client.register(lambda: "ok", "com.example.p")  # request 1
    await sleep(0.5)  # a fresh window
    assert [await client.call("com.example.p") for _ in range(3)] == ["ok"] * 3
    with pytest.raises(ApplicationError) as e:
        await client.call("com.example.p")
    assert e.value.error == "courtyard.error.rate_limited"
    with pytest.raises(ApplicationError) as e:
        await client.publish("com.example.t", options=PublishOptions(acknowledge=True))
    assert e.value.error == "courtyard.error.rate_limited"
    assert client.is_attached()  # the session stays
    await sleep(0.5)
    assert await client.call("com.example.p") == "ok"


@ensure
async def test_rate_limited_error_says_when_to_retry(make_node):
    node = make_node(**_realm(rate={"limit": 1, "duration": 10}))
    peer = await raw_connect(node.url)
    await peer.hello()
    peer.send([48, 1, {}, "com.example.none"])
    assert (await peer.recv())[4] == "wamp.error.no_such_procedure"
    peer.send([48, 2, {}, "com.example.none"])
    err = await peer.recv()
    assert err[:3] == [8, 48, 2] and err[4] == "courtyard.error.rate_limited"
    assert 9 < err[3]["retry_after"] <= 10
    peer.send([64, 3, {}, "com.example.x"])
    assert (await peer.recv())[4] == "courtyard.error.rate_limited"


@ensure
async def test_answers_are_not_rate_limited(make_node):
    node = make_node(**_realm(rate={"limit": 1, "duration": 10}))
    # REGISTER is the callee's one request in this window
    callee, caller, reg_id = await raw_callee_and_caller(node.url, "com.example.x")
    caller.send([48, 1, {}, "com.example.x"])
    inv = await callee.recv()
    callee.send([70, inv[1], {}, ["answer"]])  # a YIELD is an answer, not a request
    assert await caller.recv() == [50, 1, {}, ["answer"]]


@ensure
async def test_quota_is_spent_then_renews(make_node, serializer):
    node = make_node(**_realm(quota={"limit": 2, "duration": 0.6}))
    client = await connect(node.url, serializer)
    t0 = time.time()
    await client.subscribe(lambda: None, "com.example.t")  # 1
    await client.publish("com.example.t", options=PublishOptions(acknowledge=True))  # 2
    with pytest.raises(ApplicationError) as e:
        await client.publish("com.example.t", options=PublishOptions(acknowledge=True))
    assert e.value.error == "courtyard.error.quota_exceeded"
    session = node.table.fetch(client.welcome.session)
    quota = session.to_details_map()["quota"]
    assert quota["remaining"] == 0 and quota["limit"] == 2
    await sleep(max(0.0, 0.65 - (time.time() - t0)))
    await client.publish("com.example.t", options=PublishOptions(acknowledge=True))
    assert session.to_details_map()["quota"]["remaining"] == 1


@ensure
async def test_per_authrole_limits_override_the_realm(make_node):
    everything = [{"uri": "", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]
    node = make_node(realms=[{"uri": "realm1", "auth": {"anonymous": {"authrole": "guest"}},
                              "limits": {"rate": {"limit": 100, "duration": 1}},
                              "roles": {"guest": {"permissions": everything,
                                                  "limits": {"rate": {"limit": 1, "duration": 10}}}}}])
    client = await connect(node.url)
    await client.subscribe(lambda: None, "com.example.a")
    with pytest.raises(ApplicationError) as e:
        await client.subscribe(lambda: None, "com.example.b")
    assert e.value.error == "courtyard.error.rate_limited"


@ensure
async def test_expired_session_is_closed_with_the_documented_reason(make_node, serializer):
    node = make_node(node={"sweep_interval": 0.05}, **_realm(expires_in=0.3))
    client = await connect(node.url, serializer)
    assert node.table.fetch(client.welcome.session).expires_in == 0.3
    details = await with_timeout(client.left, 3)
    assert details.reason == "courtyard.close.session_expired"
    assert node.table.size() == 0


@ensure
async def test_idle_session_is_closed_and_a_busy_one_is_not(make_node):
    node = make_node(node={"sweep_interval": 0.05}, **_realm(idle_timeout=0.4))
    idle = await connect(node.url)
    busy = await connect(node.url)
    await busy.register(lambda: 1, "com.example.ping")
    for _ in range(8):
        assert await busy.call("com.example.ping") == 1
        await sleep(0.1)
    details = await with_timeout(idle.left, 3)
    assert details.reason == "courtyard.close.idle_timeout"
    assert busy.is_attached()


@ensure
async def test_counters_and_idle_in_details(node):
    client = await connect(node.url)
    await client.register(lambda: 1, "com.example.c")
    await client.call("com.example.c")
    d = node.table.to_details_map(client.welcome.session)
    # in: REGISTER, CALL, YIELD; out: WELCOME, REGISTERED, INVOCATION, RESULT
    assert d["counters"] == {"messages_in": 3, "messages_out": 4}
    assert 0 <= d["idle"] < 1


@ensure
async def test_auto_ping_drops_a_dead_peer(make_node):
    node = make_node(listeners=[{"auto_ping_interval": 1, "auto_ping_timeout": 1}])
    alive = await connect(node.url)
    dead = await raw_connect(node.url)
    await dead.hello()
    assert node.table.size() == 2
    dead.proto.transport.pauseProducing()  # reads nothing, so answers no ping: as good as dead
    for _ in range(100):  # autobahn's ping timers tick in whole seconds
        if node.table.size() == 1:
            break
        await sleep(0.05)
    assert node.table.size() == 1
    assert node.table.list()[0].id == alive.welcome.session  # the live client answered its pings
