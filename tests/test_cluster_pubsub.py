"""Pub/sub across the nodes of a cluster (issue 13, point 1)."""

from __future__ import annotations

import pytest_twisted

from tests.test_cluster_purge import _until
from tests.wampclient import connect

ensure = pytest_twisted.ensureDeferred


@ensure
async def test_two_in_process_nodes_see_each_others_sessions(make_cluster, redis_server):
    a, b = await make_cluster("a"), await make_cluster("b")
    c1 = await connect(a.url)
    c2 = await connect(b.url)
    try:
        await _until(lambda: redis_server.command("SCARD", "cy:r:realm1") == 2, 5, "2 sessions in Redis")
        assert await c2.call("wamp.session.count") == 2
    finally:
        c1.leave()
        c2.leave()


async def _subscriber(url: str, topic: str, got: list, **options):
    from autobahn.wamp.types import SubscribeOptions

    client = await connect(url)
    await client.subscribe(lambda *a, **kw: got.append((a, kw)), topic,
                           options=SubscribeOptions(details_arg="details", **options) if options else None)
    return client


@ensure
async def test_an_event_published_on_one_node_reaches_subscribers_on_the_other(make_cluster):
    from autobahn.wamp.types import PublishOptions

    a, b = await make_cluster("a"), await make_cluster("b")
    got_b, got_prefix = [], []
    sub_b = await _subscriber(b.url, "com.x.topic", got_b)
    sub_prefix = await _subscriber(b.url, "com.x", got_prefix, match="prefix")
    pub = await connect(a.url)
    try:
        await _until(lambda: a.cluster_parts[0].interest("realm1").wants("com.x.topic"), 5, "A knows B's interest")
        await pub.publish("com.x.topic", 1, b"\x00bin", k="v", options=PublishOptions(acknowledge=True))
        await _until(lambda: got_b and got_prefix, 5, "events on B")
        assert got_b[0][0] == (1, b"\x00bin") and got_b[0][1] == {"k": "v"}
        assert got_prefix[0][1]["details"].topic == "com.x.topic"
    finally:
        for c in (sub_b, sub_prefix, pub):
            c.leave()


@ensure
async def test_a_retained_event_reaches_a_later_subscriber_on_another_node(make_cluster, redis_server):
    from autobahn.wamp.types import PublishOptions

    a, b = await make_cluster("a"), await make_cluster("b")
    pub = await connect(a.url)
    got_exact, got_wild, got_none = [], [], []
    clients = [pub]
    try:
        await pub.publish("com.r.one", b"\xffraw", n=1, options=PublishOptions(acknowledge=True, retain=True))
        await pub.publish("com.r.two", 2, options=PublishOptions(acknowledge=True, retain=True, eligible=[1]))
        await _until(lambda: redis_server.command("HLEN", "cy:ret:realm1") == 3, 5, "two events in Redis")
        clients.append(await _subscriber(b.url, "com.r.one", got_exact, get_retained=True))
        clients.append(await _subscriber(b.url, "com.r.", got_wild, match="wildcard", get_retained=True))
        clients.append(await _subscriber(b.url, "com.r.one", got_none))  # no get_retained: nothing
        await _until(lambda: got_exact and got_wild, 5, "retained events on B")
        assert got_exact[0][0] == (b"\xffraw",) and got_exact[0][1]["n"] == 1
        assert got_exact[0][1]["details"].retained is True
        # com.r.two was for session 1 only (eligible): not for these subscribers
        assert [e[1]["details"].topic for e in got_wild] == ["com.r.one"]
        assert got_none == []
    finally:
        for c in clients:
            c.leave()
