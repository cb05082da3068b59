"""Pub/sub across the nodes of a cluster (issue 13, point 1)."""

from __future__ import annotations

import pytest_twisted

from tests.helpers.poll import until
from tests.wampclient import connect, raw_connect

ensure = pytest_twisted.ensureDeferred


@ensure
async def test_two_in_process_nodes_see_each_others_sessions(make_cluster, redis_server):
    a, b = await make_cluster("a"), await make_cluster("b")
    c1 = await connect(a.url)
    c2 = await connect(b.url)
    try:
        await until(lambda: redis_server.command("SCARD", "cy:r:realm1") == 2, 5, "2 sessions in Redis")
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
        await until(lambda: a.cluster_parts[0].interest("realm1").wants("com.x.topic"), 5, "A knows B's interest")
        await pub.publish("com.x.topic", 1, b"\x00bin", k="v", options=PublishOptions(acknowledge=True))
        await until(lambda: got_b and got_prefix, 5, "events on B")
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
        await until(lambda: redis_server.command("HLEN", "cy:ret:realm1") == 3, 5, "two events in Redis")
        clients.append(await _subscriber(b.url, "com.r.one", got_exact, get_retained=True))
        clients.append(await _subscriber(b.url, "com.r.", got_wild, match="wildcard", get_retained=True))
        clients.append(await _subscriber(b.url, "com.r.one", got_none))  # no get_retained: nothing
        await until(lambda: got_exact and got_wild, 5, "retained events on B")
        assert got_exact[0][0] == (b"\xffraw",) and got_exact[0][1]["n"] == 1
        assert got_exact[0][1]["details"].retained is True
        # com.r.two was for session 1 only (eligible): not for these subscribers
        assert [e[1]["details"].topic for e in got_wild] == ["com.r.one"]
        assert got_none == []
    finally:
        for c in clients:
            c.leave()


@ensure
async def test_subscription_meta_answers_for_the_whole_cluster(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    creates = []
    watch_a = await _subscriber(a.url, "wamp.subscription.on_create", creates)
    watch_b = await _subscriber(b.url, "wamp.subscription.on_create", creates)
    await until(lambda: b.cluster_parts[0].interest("realm1").wants("wamp.subscription.on_create"), 5, "interest")
    on_a, on_b, asker = await connect(a.url), await connect(b.url), await connect(b.url)
    try:
        sub_a = await on_a.subscribe(lambda *a: None, "com.m.topic")
        await until(lambda: b.cluster_parts[0].interest("realm1").wants("com.m.topic"), 5, "A's subscription on B")
        sub_b = await on_b.subscribe(lambda *a: None, "com.m.topic")
        only_a = await on_a.subscribe(lambda *a: None, "com.m.", options=__import__(
            "autobahn.wamp.types", fromlist=["SubscribeOptions"]).SubscribeOptions(match="wildcard"))
        assert sub_a.id == sub_b.id  # one id per (realm, topic, match) on every node
        await until(lambda: len(creates) >= 4, 5, "on_create on both nodes")
        assert len(creates) == 4  # com.m.topic and com.m., each created once, seen on two nodes
        assert await asker.call("wamp.subscription.lookup", "com.m.topic") == sub_a.id
        assert await asker.call("wamp.subscription.lookup", "com.m.", {"match": "wildcard"}) == only_a.id
        listed = await asker.call("wamp.subscription.list")
        assert sub_a.id in listed["exact"] and only_a.id in listed["wildcard"]
        assert set(await asker.call("wamp.subscription.match", "com.m.topic")) == {sub_a.id, only_a.id}
        got = await asker.call("wamp.subscription.get", only_a.id)
        assert (got["uri"], got["match"]) == ("com.m.", "wildcard")
        assert set(await asker.call("wamp.subscription.list_subscribers", sub_a.id)) == {
            on_a._session_id, on_b._session_id}
        assert await asker.call("wamp.subscription.count_subscribers", only_a.id) == 1
    finally:
        for c in (watch_a, watch_b, on_a, on_b, asker):
            c.leave()


@ensure
async def test_one_message_per_node_and_the_publishers_lists_apply_on_the_other_node(make_cluster):
    from autobahn.wamp.types import PublishOptions

    a, b = await make_cluster("a"), await make_cluster("b")
    got = {i: [] for i in range(3)}
    subs = [await _subscriber(b.url, "com.f.topic", got[i]) for i in range(3)]
    wild = []
    subs.append(await _subscriber(b.url, "com..topic", wild, match="wildcard"))
    pub = await connect(a.url)
    part = a.cluster_parts[0]
    try:
        await until(lambda: len(b.realm_router("realm1").broker.subscriptions()) == 2
                     and part.interest("realm1").patterns == 1, 5, "B's interest on A")
        sent = part.sent
        raw = await raw_connect(a.url)
        welcome = await raw.hello()
        raw.send([16, 1, {"disclose_me": True, "acknowledge": True}, "com.f.topic", ["all"]])
        assert (await raw.recv())[0] == 17
        await pub.publish("com.f.topic", "not-1", options=PublishOptions(acknowledge=True,
                                                                         exclude=[subs[1]._session_id]))
        await pub.publish("com.f.topic", "only-2", options=PublishOptions(acknowledge=True,
                                                                          eligible=[subs[2]._session_id]))
        await pub.publish("com.f.topic", "nobody", options=PublishOptions(acknowledge=True,
                                                                          exclude_authrole=["anonymous"]))
        await until(lambda: len(got[2]) == 3, 5, "events on B")
        assert part.sent - sent == 4  # one bus message per publication, for 4 subscriptions on B
        assert [e[0][0] for e in got[0]] == ["all", "not-1"]
        assert [e[0][0] for e in got[1]] == ["all"]
        assert [e[0][0] for e in got[2]] == ["all", "not-1", "only-2"]
        assert [e[0][0] for e in wild] == ["all", "not-1"]
        details = wild[0][1]["details"]
        assert details.publisher == welcome[1] and details.topic == "com.f.topic"
        for s in subs:  # the last subscriber leaves B: A stops sending
            s.leave()
        await until(lambda: not part.interest("realm1").wants("com.f.topic")
                     and part.interest("realm1").patterns == 0, 5, "B's interest gone from A")
        sent = part.sent
        await pub.publish("com.f.topic", "late", options=PublishOptions(acknowledge=True))
        assert part.sent == sent
    finally:
        pub.leave()


@ensure
async def test_a_stopped_nodes_interest_is_forgotten(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    sub = await _subscriber(b.url, "com.g.topic", [])
    part = a.cluster_parts[0]
    await until(lambda: part.interest("realm1").wants("com.g.topic"), 5, "B's interest on A")
    sub.leave()
    b.config.shutdown_grace = 0.1
    await b.stop()
    await until(lambda: "b" not in part.by_node, 5, "B forgotten")
    assert not part.interest("realm1").wants("com.g.topic")


@ensure
async def test_after_a_redis_restart_events_cross_again_even_for_subscriptions_made_meanwhile(make_cluster,
                                                                                           redis_server):
    from autobahn.twisted.util import sleep
    from autobahn.wamp.types import PublishOptions

    from tests.redisproc import RedisServer

    a, b = await make_cluster("a"), await make_cluster("b")
    before, during = [], []
    clients = [await _subscriber(b.url, "com.rr.before", before)]
    part = a.cluster_parts[0]
    restarted = None
    try:
        await until(lambda: part.interest("realm1").wants("com.rr.before"), 5, "B's interest on A")
        port, workdir = redis_server.port, redis_server.workdir
        redis_server.stop()
        await until(lambda: not b.membership.up and not a.membership.up, 5, "both nodes to notice")
        clients.append(await _subscriber(b.url, "com.rr.during", during))  # Redis away: B cannot tell A
        restarted = RedisServer(workdir)
        restarted.port, restarted.url = port, redis_server.url
        restarted.start()
        await until(lambda: part.interest("realm1").wants("com.rr.during") and a.membership.up, 15,
                     "B's subscriptions known to A again")
        assert sorted(restarted.command("SMEMBERS", "cy:subs:b")) == [
            '["realm1","exact","com.rr.before"]', '["realm1","exact","com.rr.during"]']
        pub = await connect(a.url)
        clients.append(pub)
        for topic in ("com.rr.before", "com.rr.during"):
            await pub.publish(topic, topic, options=PublishOptions(acknowledge=True))
        await until(lambda: before and during, 5, "events on B")
        await sleep(0.1)
        assert [e[0] for e in before + during] == [("com.rr.before",), ("com.rr.during",)]
    finally:
        for c in clients:
            c.leave()
        if restarted is not None:
            restarted.stop()
