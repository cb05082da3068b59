"""A subscriber that stops reading cannot make the router's memory grow: past max_outgoing_buffer its
EVENTs are dropped (counted) or it is disconnected, per config (DESIGN.md, rules of the house)."""

from __future__ import annotations

import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.types import PublishOptions

from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred

LIMIT = 256 * 1024
PAYLOAD = "x" * 8192
EVENTS = 400  # 3.2 MB of EVENTs for a reader that takes none


async def _stalled_subscriber(node):
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    peer.send([32, 1, {}, "com.example.firehose"])
    await peer.recv()
    peer.proto.transport.pauseProducing()  # stop reading: the router's socket backs up
    conn = node.table.list()[0].transport.wire
    return peer, conn


@ensure
async def test_events_to_a_stalled_reader_are_dropped_not_queued(make_node):
    node = make_node(listeners=[{"max_outgoing_buffer": LIMIT, "slow_consumer": "drop"}])
    peer, conn = await _stalled_subscriber(node)
    publisher = await connect(node.url, "msgpack")
    for _ in range(EVENTS):
        await publisher.publish("com.example.firehose", PAYLOAD, options=PublishOptions(acknowledge=True))
    assert conn.dropped_events > 0
    assert conn._backlog <= LIMIT
    assert publisher.is_attached() and node.table.size() == 2
    # once it reads again it catches up and gets new events
    peer.proto.transport.resumeProducing()
    for _ in range(200):
        if not conn._paused:
            break
        await sleep(0.02)
    while peer.inbox.pending:
        peer.inbox.pending.pop()
    await publisher.publish("com.example.firehose", "after", options=PublishOptions(acknowledge=True))
    for _ in range(100):
        if any(m[4] == ["after"] for m in peer.inbox.pending if m[0] == 36):
            break
        await sleep(0.02)
    assert any(m[4] == ["after"] for m in peer.inbox.pending if m[0] == 36)


@ensure
async def test_a_stalled_reader_is_disconnected_when_configured(make_node):
    node = make_node(listeners=[{"max_outgoing_buffer": LIMIT, "slow_consumer": "disconnect"}])
    peer, conn = await _stalled_subscriber(node)
    publisher = await connect(node.url, "msgpack")
    for _ in range(EVENTS):
        await publisher.publish("com.example.firehose", PAYLOAD, options=PublishOptions(acknowledge=True))
        if node.table.size() == 1:
            break
    assert node.table.size() == 1 and publisher.is_attached()  # the stalled session is gone
    peer.proto.transport.resumeProducing()  # a paused reader notices the reset only once it reads
    await with_timeout(peer.closed)
