"""The node-to-node bus on a real redis-server: msgpack keeps binary payloads, a request gets its
answer (or the other node's error, or ClusterUnavailable when nobody answers), and nothing is
queued without bound (issue 13, point 4)."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from twisted.internet import defer

from router.cluster import bus as busmod
from router.cluster.bus import Bus, RemoteError
from router.cluster.connection import ClusterUnavailable, connect
from router.cluster.url import parse_redis_url

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def buses(redis_server):
    made = []

    async def make(node_id: str) -> Bus:
        target = parse_redis_url(redis_server.url)
        conn = await connect(target)
        bus = Bus(conn, target, node_id, 2.0)
        await bus.start()
        made.append((bus, conn))
        return bus

    yield make
    for bus, conn in made:
        pytest_twisted.blockon(bus.stop())
        pytest_twisted.blockon(conn.disconnect())


class Failing(Exception):
    uri = "wamp.error.invalid_argument"
    message = "no such thing"


@ensure
async def test_messages_keep_binary_payloads_and_requests_get_answers(buses):
    a, b = await buses("node-a"), await buses("node-b")
    got = []
    b.on("note", lambda sender, body: got.append((sender, body)))
    b.on("double", lambda sender, body: defer.succeed([body[0] * 2, body[1]]))
    b.on("fail", lambda sender, body: (_ for _ in ()).throw(Failing()))
    payload = {"args": [b"\x00\xff raw", "text", 2**53, 1.5, None, [True]]}
    assert await a.send("node-b", "note", payload) == 1
    for _ in range(100):
        if got:
            break
        await sleep(0.01)
    assert got == [("node-a", payload)]
    assert await a.request("node-b", "double", [21, b"\x01"]) == [42, b"\x01"]
    with pytest.raises(RemoteError) as e:
        await a.request("node-b", "fail", None)
    assert (e.value.uri, e.value.message) == ("wamp.error.invalid_argument", "no such thing")
    with pytest.raises(ClusterUnavailable):  # nobody listens on that node's channel
        await a.request("node-gone", "double", [1, b""])
    assert a._requests == {} and a.inflight == 0


@ensure
async def test_sending_fails_at_once_past_the_inflight_budget(buses, monkeypatch):
    a = await buses("node-a")
    monkeypatch.setattr(busmod, "MAX_INFLIGHT_BYTES", 1000)
    sends = [a.send("node-b", "note", b"x" * 400) for _ in range(3)]
    results = await defer.DeferredList(sends, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, True, False]
    assert results[2][1].check(ClusterUnavailable)
    assert a.inflight == 0
