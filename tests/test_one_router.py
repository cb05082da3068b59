"""One router, any number of nodes (issue 20, item 2): match precedence and the shared registration
policies are decided over the whole cluster, UNREGISTERED is answered once every node has applied it,
and events keep their publication order across nodes. Each test runs on one node and spread over two
nodes of a cluster (real redis-server, real autobahn clients), and asserts the same outcome."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions
from twisted.internet import defer

from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def node(spread):
    return spread


async def _clients(node, n: int) -> list:
    """n autobahn clients; spread over two nodes, consecutive clients land on different nodes."""
    return [await connect(node.url) for _ in range(n)]


def _leave(*clients) -> None:
    for c in clients:
        c.leave()


@ensure
async def test_precedence_follows_each_unregister_across_nodes(node):
    """Exact > longest prefix > shorter prefix > wildcard, decided over every node's registrations: each
    UNREGISTER, once answered, routes the very next CALL (from either node) to the next in precedence."""
    procedure = "com.example.deep.tree.leaf"
    patterns = [("exact", procedure), ("prefix", "com.example.deep.tree"), ("prefix", "com.example"),
                ("wildcard", "com.example.deep..leaf")]
    callees = await _clients(node, len(patterns))
    callers = await _clients(node, 2)
    try:
        regs = []
        for callee, (match, uri) in zip(callees, patterns, strict=True):
            regs.append(await callee.register(lambda *a, _m=match, _u=uri, **k: f"{_m}:{_u}", uri,
                                              options=RegisterOptions(match=match)))
        for i, (match, uri) in enumerate(patterns):
            for caller in callers:
                got = await with_timeout(caller.call(procedure))
                assert got == f"{match}:{uri}", (i, got)
            await with_timeout(regs[i].unregister())  # answered once every node has applied it
        for caller in callers:
            with pytest.raises(ApplicationError) as e:
                await with_timeout(caller.call(procedure))
            assert e.value.error == "wamp.error.no_such_procedure"
    finally:
        _leave(*callees, *callers)


async def _shared(node, invoke: str, n: int = 3):
    """n callees of one shared registration, registered one after the other (spread: on alternating
    nodes); returns them with the list their calls are counted in, by callee index."""
    callees = await _clients(node, n)
    hits: list[int] = []
    regs = []
    for i, callee in enumerate(callees):
        regs.append(await callee.register(lambda _i=i: hits.append(_i) or _i, "com.example.shared",
                                          options=RegisterOptions(invoke=invoke)))
    return callees, regs, hits


@pytest.mark.parametrize("invoke, expected", [("first", 0), ("last", 2)])
@ensure
async def test_first_and_last_follow_router_wide_registration_order(node, invoke, expected):
    callees, regs, hits = await _shared(node, invoke)
    callers = await _clients(node, 2)
    try:
        for _ in range(5):
            for caller in callers:
                assert await with_timeout(caller.call("com.example.shared")) == expected
        assert hits == [expected] * 10
        await with_timeout(regs[expected].unregister())
        after = 1
        for caller in callers:
            assert await with_timeout(caller.call("com.example.shared")) == after
    finally:
        _leave(*callees, *callers)


@ensure
async def test_roundrobin_is_fair_for_callers_on_every_node(node):
    """Each caller's node takes turns over the same router-wide list: 30 calls from each node give every
    callee exactly 10 of them."""
    callees, regs, hits = await _shared(node, "roundrobin")
    callers = await _clients(node, 2)
    try:
        for caller in callers:
            before = len(hits)
            for _ in range(30):
                await with_timeout(caller.call("com.example.shared"))
            assert sorted(hits[before:].count(i) for i in range(3)) == [10, 10, 10], hits[before:]
    finally:
        _leave(*callees, *callers)


@ensure
async def test_random_is_uniform_over_every_node_s_callees(node):
    callees, regs, hits = await _shared(node, "random")
    [caller] = await _clients(node, 1)
    try:
        await with_timeout(defer.gatherResults([caller.call("com.example.shared") for _ in range(300)]), 30)
        counts = [hits.count(i) for i in range(3)]
        assert all(50 <= c <= 150 for c in counts), counts  # each expects 100; this fails about once in 10^9
    finally:
        _leave(*callees, caller)


@ensure
async def test_unregistered_means_no_call_reaches_it_from_any_node(node):
    """After UNREGISTERED, no CALL from any node reaches the callee: a shared registration's other callee
    (on the other node when spread) takes every call at once."""
    callees, regs, hits = await _shared(node, "roundrobin", n=2)
    callers = await _clients(node, 2)
    try:
        for round_ in range(5):
            await with_timeout(regs[0].unregister())
            for caller in callers:
                for _ in range(3):
                    assert await with_timeout(caller.call("com.example.shared")) == 1, round_
            regs[0] = await callees[0].register(lambda: hits.append(0) or 0, "com.example.shared",
                                                options=RegisterOptions(invoke="roundrobin"))
    finally:
        _leave(*callees, *callers)


@ensure
async def test_events_keep_publication_order_across_nodes(node):
    """2,000 events from one publisher, published without waiting, arrive in order at a subscriber on
    the same node and at one on the other node."""
    subscribers = await _clients(node, 2)
    [publisher] = await _clients(node, 1)
    got: list[list[int]] = [[], []]
    done = [defer.Deferred(), defer.Deferred()]
    total = 2000

    def handler(i: int):
        def on_event(n: int) -> None:
            got[i].append(n)
            if len(got[i]) == total:
                done[i].callback(None)
        return on_event

    try:
        for i, s in enumerate(subscribers):
            await s.subscribe(handler(i), "com.example.order", options=SubscribeOptions(match="exact"))
        for n in range(total):
            publisher.publish("com.example.order", n)
        await with_timeout(publisher.publish("com.example.order", -1, options=PublishOptions(acknowledge=True)))
        await with_timeout(defer.gatherResults(done), 30)
        assert got[0][:total] == list(range(total)) and got[1][:total] == list(range(total))
    finally:
        _leave(*subscribers, publisher)


@ensure
async def test_a_realm_started_later_on_a_node_routes_to_earlier_registrations(make_cluster):
    """Node a has never served realm1 when a callee registers on node b; a's first caller finds it."""
    a, b = await make_cluster("a"), await make_cluster("b")
    assert "realm1" not in a.realm_routers()
    [callee] = [await connect(b.url)]
    try:
        await callee.register(lambda: "from b", "com.example.early")
        caller = await connect(a.url)
        try:
            assert await with_timeout(caller.call("com.example.early")) == "from b"
        finally:
            caller.leave()
    finally:
        callee.leave()
