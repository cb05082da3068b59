"""Caches and tables of client-supplied strings stay bounded in bytes, over real sockets (issue 11,
item 5): the URI validity cache, a role's authorization cache, and the retained events of a realm."""

from __future__ import annotations

import pytest_twisted

from router import wamp
from tests.wampclient import raw_connect

ensure = pytest_twisted.ensureDeferred
LONG = 100_000  # characters per topic: far past what a cache may keep per key


def _cached_chars(cache: dict) -> int:
    return sum(len(k) if isinstance(k, str) else sum(len(p) for p in k if isinstance(p, str)) for k in cache)


@ensure
async def test_long_topics_are_not_kept_by_the_uri_cache(make_node):
    node = make_node(limits={"max_uri_length": 2 * LONG})  # the caches' own bounds, under a lax URI limit
    wamp._uri_cache.clear()
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    for i in range(30):  # unacknowledged, to distinct long topics, as in the report
        peer.send([16, i + 1, {}, f"com.t{i}." + "x" * LONG, ["payload"]])
    peer.send([16, 100, {"acknowledge": True}, "com.valid." + "x" * LONG, []])
    assert (await peer.recv())[:2] == [17, 100]  # long, valid: published
    peer.send([16, 101, {"acknowledge": True}, "com.in valid." + "x" * LONG, []])
    assert (await peer.recv())[4] == "wamp.error.invalid_uri"  # long, invalid: refused
    peer.send([16, 102, {"acknowledge": True}, "com.bad.." + "x" * LONG, []])
    assert (await peer.recv())[4] == "wamp.error.invalid_uri"
    peer.drop()
    assert _cached_chars(wamp._uri_cache) < 10_000
    assert max(map(len, wamp._uri_cache), default=0) <= 256


@ensure
async def test_long_uris_are_not_kept_by_the_authorization_cache(make_node):
    node = make_node(limits={"max_uri_length": 2 * LONG}, realms=[{"uri": "realm1", "roles": {"anonymous": {
        "permissions": [{"uri": "com.", "match": "prefix", "allow": ["publish", "call"]}]}}}])
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    for i in range(20):
        peer.send([16, i + 1, {}, f"com.t{i}." + "x" * LONG, []])
        peer.send([16, i + 100, {}, f"org.t{i}." + "x" * LONG, []])  # denied: decided, not cached either
    peer.send([48, 200, {}, "com.p." + "x" * LONG, []])
    assert (await peer.recv())[4] == "wamp.error.no_such_procedure"
    peer.send([48, 201, {}, "org.p." + "x" * LONG, []])
    assert (await peer.recv())[4] == "wamp.error.not_authorized"
    role = node.realms.get("realm1").role("anonymous")
    assert _cached_chars(role._cache) < 10_000


@ensure
async def test_retained_events_are_bounded_in_bytes_oldest_forgotten_first(make_node):
    node = make_node(limits={"max_retained_bytes": 300_000})
    broker = node.realm_router("realm1").broker
    publisher = await raw_connect(node.url, "msgpack")
    await publisher.hello()
    for i in range(10):
        publisher.send([16, i + 1, {"acknowledge": True, "retain": True}, f"com.r{i}", ["y" * 100_000]])
        assert (await publisher.recv())[:2] == [17, i + 1]
    assert broker.retained() == 2 and 200_000 < broker.retained_bytes() <= 300_000
    # larger than the whole budget: delivered, not retained, and the topic's older event is forgotten
    publisher.send([16, 50, {"acknowledge": True, "retain": True}, "com.r9", ["z" * 400_000]])
    assert (await publisher.recv())[:2] == [17, 50]
    assert broker.retained() == 1 and broker.retained_bytes() <= 300_000
    publisher.drop()
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    peer.send([32, 1, {"get_retained": True}, "com.r0"])  # forgotten
    peer.send([32, 2, {"get_retained": True}, "com.r8"])  # kept
    assert (await peer.recv())[:2] == [33, 1]
    assert (await peer.recv())[:2] == [33, 2]
    event = await peer.recv()
    assert event[3] == {"retained": True} and event[4] == ["y" * 100_000]
    peer.send([32, 3, {"get_retained": True}, "com.r9"])  # its too-large event was not retained
    peer.send([32, 4, {"get_retained": True}, "com.r8"])
    assert (await peer.recv())[:2] == [33, 3]
    assert (await peer.recv())[:2] == [33, 4]  # r9 sent nothing between the two


@ensure
async def test_testaments_are_bounded_in_bytes_per_session(node):
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    big = "w" * 300_000
    for i in range(1, 4):
        peer.send([48, i, {}, "wamp.session.add_testament", ["com.example.will", [big], {}]])
        assert (await peer.recv())[:2] == [50, i]
    peer.send([48, 4, {}, "wamp.session.add_testament", ["com.example.will", [big], {}], {"scope": "detached"}])
    error = await peer.recv()
    assert error[:3] == [8, 48, 4] and error[4] == "courtyard.error.too_many_testaments"
    peer.send([48, 5, {}, "wamp.session.flush_testaments", []])
    assert (await peer.recv())[:2] == [50, 5]
    peer.send([48, 6, {}, "wamp.session.add_testament", ["com.example.will", [big], {}]])
    assert (await peer.recv())[:2] == [50, 6]  # room again after the flush
    watcher = await raw_connect(node.url, "msgpack")
    await watcher.hello()
    watcher.send([32, 1, {}, "com.example.will"])
    assert (await watcher.recv())[0] == 33
    peer.drop()
    assert (await watcher.recv())[4] == [big]
