"""The status page's JSON (issue 25): sessions listed (paged, filtered by realm, authid, authrole), one
session's details, kills only with the bearer token (even from an allowed network), bad parameters 400;
on one node and across a two-node cluster (every node's summary, another node's full status)."""

from __future__ import annotations

import json

import pytest_twisted
from autobahn.twisted.util import sleep
from twisted.internet import defer, threads

from tests.opsload import _exchange, http_get
from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred
TOKEN = "status-api-token-0123456789"
BEARER = f"Authorization: Bearer {TOKEN}\r\n"


async def _json(port: int, path: str, headers: str = "") -> tuple[int, object]:
    status, _, body = await http_get(port, path, headers)
    return status, (json.loads(body) if status == 200 else body.decode())


async def _post(port: int, path: str, headers: str = "") -> tuple[int, bytes]:
    raw = await threads.deferToThread(
        _exchange, port, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n{headers}\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@ensure
async def test_sessions_are_listed_paged_filtered_and_killed_with_the_token_only(make_node):
    node = make_node(http={"token": TOKEN}, realms=[{"uri": "realm1"}, {"uri": "realm2"}])
    clients = [await connect(node.url) for _ in range(5)] + [await connect(node.url, realm="realm2")]
    status, page = await _json(node.port, "/sessions.json?per_page=4")
    assert status == 200 and page["total"] == 6 and len(page["sessions"]) == 4 and page["page"] == 1
    status, page2 = await _json(node.port, "/sessions.json?per_page=4&page=2")
    assert len(page2["sessions"]) == 2
    listed = {d["session"] for d in page["sessions"] + page2["sessions"]}
    assert listed == {c.welcome.session for c in clients}
    status, only = await _json(node.port, "/sessions.json?realm=realm2")
    assert [d["session"] for d in only["sessions"]] == [clients[5].welcome.session]
    who = clients[0].welcome.authid
    status, by_authid = await _json(node.port, f"/sessions.json?realm=realm1&authid={who}")
    assert [d["authid"] for d in by_authid["sessions"]] == [who]
    status, by_role = await _json(node.port, "/sessions.json?authrole=nobody")
    assert by_role["total"] == 0
    victim = clients[1]
    status, one = await _json(node.port, f"/session.json?id={victim.welcome.session}")
    assert status == 200 and one["session"] == victim.welcome.session and one["realm"] == "realm1"
    assert (await _json(node.port, "/session.json?id=12345"))[0] == 400
    assert (await _json(node.port, "/session.json?id=x"))[0] == 400
    assert (await _json(node.port, "/sessions.json?per_page=100000"))[0] == 400
    # killing: POST only, the token only (this client is on an allowed network, and that is not enough)
    kill = f"/sessions/kill?id={victim.welcome.session}"
    assert (await http_get(node.port, kill, BEARER))[0] == 405
    assert (await _post(node.port, kill))[0] == 403
    assert (await _post(node.port, kill, "Authorization: Bearer wrong-token-0123456789\r\n"))[0] == 403
    assert not victim.left.called
    status, body = await _post(node.port, kill, BEARER)
    assert status == 200 and json.loads(body) == {"killed": 1}
    assert (await with_timeout(victim.left, 5)).reason == "wamp.close.killed"
    assert (await _post(node.port, kill, BEARER))[1] == b'{"killed":0}'
    for c in clients:
        if c is not victim:
            c.leave()


@ensure
async def test_without_a_token_no_session_can_be_killed(make_node):
    node = make_node()
    peer = await raw_connect(node.url)
    await peer.hello()
    sid = node.table.list()[0].id
    status, body = await _post(node.port, f"/sessions/kill?id={sid}", BEARER)
    assert status == 403 and b"bearer token" in body
    assert node.table.lookup(sid) is not None


@ensure
async def test_a_cluster_node_lists_every_node_and_every_session(make_cluster, redis_server):
    a = await make_cluster("a", http={"token": TOKEN})
    b = await make_cluster("b", http={"token": TOKEN})
    on_a, on_b = await connect(a.url), await connect(b.url)
    status, s = await _json(a.port, "/status.json")
    assert status == 200 and s["node_id"] == "a"
    nodes = {n["id"]: n for n in s["nodes"]}
    assert set(nodes) == {"a", "b"} and all(n["health"] == "ok" and n["sessions"] == 1 for n in nodes.values())
    status, other = await _json(a.port, "/status.json?node=b")
    assert status == 200 and other["node_id"] == "b" and other["sessions"] == 1
    assert (await _json(a.port, "/status.json?node=nobody"))[0] == 400  # no node listens there
    assert (await _json(a.port, "/status.json?node=" + "x" * 101))[0] == 400
    want = {(on_a.welcome.session, "a"), (on_b.welcome.session, "b")}
    for _ in range(100):  # each node writes its session records to Redis within a moment
        status, page = await _json(a.port, "/sessions.json")
        if {(d["session"], d["node"]) for d in page["sessions"]} == want:
            break
        await sleep(0.05)
    assert {(d["session"], d["node"]) for d in page["sessions"]} == want
    status, one = await _json(a.port, f"/session.json?id={on_b.welcome.session}")
    assert one["node"] == "b"
    status, body = await _post(a.port, f"/sessions/kill?id={on_b.welcome.session}", BEARER)
    assert status == 200 and json.loads(body) == {"killed": 1}
    assert (await with_timeout(on_b.left, 5)).reason == "wamp.close.killed"
    b.bus.on("status", lambda sender, body: defer.Deferred())  # b stops answering: listed as "no answer"
    status, s = await _json(a.port, "/status.json")
    assert {n["id"]: n["health"] for n in s["nodes"]} == {"a": "ok", "b": "no answer"}
    # without Redis: this node's own sessions, said to be only those; its status still answers
    redis_server.stop()
    for _ in range(100):
        status, page = await _json(a.port, "/sessions.json")
        if status == 200 and "partial" in page:
            break
        await sleep(0.05)
    assert "partial" in page and [d["session"] for d in page["sessions"]] == [on_a.welcome.session], page
    status, s = await _json(a.port, "/status.json")
    assert status == 200 and [n["id"] for n in s["nodes"]] == ["a"]
    on_a.leave()
