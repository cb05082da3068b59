"""A session lives exactly as long as its connection (issue 2, point 6): thousands of connections
that subscribe, register and call, then vanish, leave the session table and the realm empty."""

from __future__ import annotations

import pytest_twisted
from autobahn.twisted.util import sleep
from twisted.internet import defer

from tests.wampclient import raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred

CONNECTIONS = 2000
BATCH = 200


async def _busy_peer(node, i: int, serializer: str):
    peer = await raw_connect(node.url, serializer)
    await peer.hello()
    peer.send([32, 1, {}, f"com.example.topic.{i % 50}"])
    peer.send([64, 2, {}, f"com.example.proc.{i}"])
    peer.send([48, 3, {}, "com.example.proc.0"])  # a call in flight to peer 0 (or no_such_procedure)
    await peer.recv()
    await peer.recv()
    return peer


@ensure
async def test_thousands_of_dropped_connections_leave_nothing_behind(node):
    realm = node.realm_router("realm1")
    for start in range(0, CONNECTIONS, BATCH):
        peers = await defer.gatherResults([
            defer.ensureDeferred(_busy_peer(node, i, "json" if i % 2 else "msgpack"))
            for i in range(start, start + BATCH)])
        assert node.table.size() == BATCH
        assert realm.broker.size() == 50
        assert realm.dealer.size() == BATCH
        # half vanish abruptly (TCP reset), half close the WebSocket politely
        for n, peer in enumerate(peers):
            if n % 2:
                peer.drop()
            else:
                peer.proto.sendClose()
        await defer.gatherResults([defer.ensureDeferred(with_timeout(p.closed)) for p in peers])
        for _ in range(100):
            if node.table.size() == 0:
                break
            await sleep(0.01)
        assert node.table.size() == 0
    assert realm.broker.size() == 0
    assert realm.dealer.size() == 0
    assert realm.dealer.pending() == 0
    assert realm.broker._by_session == {} and realm.dealer._by_callee == {} and realm.dealer._calls == {}
