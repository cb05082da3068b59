"""RPC across the nodes of a cluster (issue 13, point 2, and the registration half of point 3): two
in-process nodes on the test's redis-server, the caller on one node and the callee on the other."""

from __future__ import annotations

import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions
from twisted.internet import defer

from tests.test_cluster_purge import _until
from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred

CALL, RESULT, REGISTER, REGISTERED, INVOCATION, INTERRUPT, YIELD, ERROR, CANCEL = 48, 50, 64, 65, 68, 69, 70, 8, 49
CANCELING = {"caller": {"features": {"progressive_call_results": True, "call_canceling": True}},
             "callee": {"features": {"call_canceling": True, "progressive_call_results": True,
                                     "progressive_call_invocations": True}}}


async def _peer(node, serializer: str = "json", roles: dict | None = None):
    peer = await raw_connect(node.url, serializer)
    welcome = await peer.hello(roles=roles or CANCELING)
    assert welcome[0] == 2, welcome
    return peer


async def _registered(peer, procedure: str, options: dict | None = None, request: int = 1) -> int:
    peer.send([REGISTER, request, options or {}, procedure])
    reply = await peer.recv()
    assert reply[:2] == [REGISTERED, request], reply
    return reply[2]


async def _known(node, procedure: str, match: str = "exact", callees: int = 1) -> None:
    """Wait until `node`'s view of the cluster has the registration (broadcasts are asynchronous)."""
    def seen():
        rr = node.realm_router("realm1").dealer.cluster
        entry = rr.lookup(procedure, match)
        return entry is not None and len(entry.callees) == callees

    await _until(seen, 5, f"{procedure} with {callees} callees known on {node.config.cluster.node_id}")


def _leave(*clients) -> None:
    for c in clients:
        if c.is_connected():
            c.leave()


@ensure
async def test_a_call_crosses_nodes_both_ways(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    on_a, on_b = await connect(a.url), await connect(b.url)
    try:
        await on_b.register(lambda x, y=0: x + y, "com.example.add")
        await on_a.register(lambda s: s.upper(), "com.example.upper")
        await _known(a, "com.example.add")
        await _known(b, "com.example.upper")
        assert await with_timeout(on_a.call("com.example.add", 2, y=3)) == 5
        assert await with_timeout(on_b.call("com.example.upper", "abc")) == "ABC"
        with_error = on_a.call("com.example.nothing")
        try:
            await with_timeout(with_error)
            raise AssertionError("no error")
        except ApplicationError as e:
            assert e.error == "wamp.error.no_such_procedure"
    finally:
        _leave(on_a, on_b)


@ensure
async def test_callee_errors_cross_back_with_uri_args_kwargs(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    on_a, on_b = await connect(a.url), await connect(b.url)
    try:
        def fails():
            raise ApplicationError("com.example.oops", 1, "two", three=3)

        await on_b.register(fails, "com.example.fails")
        await _known(a, "com.example.fails")
        try:
            await with_timeout(on_a.call("com.example.fails"))
            raise AssertionError("no error")
        except ApplicationError as e:
            assert (e.error, e.args, e.kwargs) == ("com.example.oops", (1, "two"), {"three": 3})
    finally:
        _leave(on_a, on_b)


@ensure
async def test_a_single_registration_race_across_nodes_has_one_winner(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    for round_ in range(5):
        pa, pb = await _peer(a), await _peer(b)
        procedure = f"com.example.race{round_}"
        pa.send([REGISTER, 1, {}, procedure])
        pb.send([REGISTER, 1, {}, procedure])
        ra, rb = await pa.recv(), await pb.recv()
        assert sorted([ra[0], rb[0]]) == [ERROR, REGISTERED], (ra, rb)
        loser = ra if ra[0] == ERROR else rb
        assert loser[4] == "wamp.error.procedure_already_exists", loser
        pa.drop()
        pb.drop()


@ensure
async def test_a_shared_registration_refuses_another_policy_from_another_node(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    pa, pb = await _peer(a), await _peer(b)
    await _registered(pa, "com.example.shared", {"invoke": "roundrobin"})
    pb.send([REGISTER, 1, {"invoke": "first"}, "com.example.shared"])
    reply = await pb.recv()
    assert reply[4] == "wamp.error.procedure_exists_with_different_invocation_policy", reply
    pb.send([REGISTER, 2, {}, "com.example.shared"])
    reply = await pb.recv()
    assert reply[4] == "wamp.error.procedure_exists_with_different_invocation_policy", reply
    pa.drop()
    pb.drop()


@ensure
async def test_register_while_redis_is_away_is_refused_at_once(make_cluster, redis_server):
    a = await make_cluster("a")
    pa = await _peer(a)
    redis_server.stop()
    await _until(lambda: not a.redis._factory.size, 5, "the node to notice Redis is gone")
    pa.send([REGISTER, 1, {}, "com.example.x"])
    reply = await pa.recv()
    assert reply[:3] == [ERROR, REGISTER, 1] and reply[4] == "courtyard.error.cluster_unavailable", reply
    pa.drop()
    redis_server.start()
    await _until(lambda: a.redis._factory.size, 10, "the node to reconnect")


@ensure
async def test_callee_node_killed_mid_call_callers_get_canceled(make_cluster):
    """(In-process: the callee's node is stopped without a word, as a kill -9 would leave it;
    tests/test_cluster_rpc_kill.py does it to a real process.)"""
    a, b = await make_cluster("a"), await make_cluster("b")
    caller = await _peer(a)
    callee = await _peer(b)
    await _registered(callee, "com.example.slow")
    await _known(a, "com.example.slow")
    caller.send([CALL, 1, {}, "com.example.slow", [1]])
    inv = await callee.recv()
    assert inv[0] == INVOCATION, inv
    a._node_down("b")
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 1] and reply[4] == "wamp.error.canceled", reply
    caller.drop()
    callee.drop()


@ensure
async def test_caller_leaving_mid_call_interrupts_the_callee_on_the_other_node(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    caller = await _peer(a)
    callee = await _peer(b)
    await _registered(callee, "com.example.slow")
    await _known(a, "com.example.slow")
    caller.send([CALL, 1, {}, "com.example.slow", [1]])
    inv = await callee.recv()
    assert inv[0] == INVOCATION, inv
    caller.drop()
    interrupt = await callee.recv()
    assert interrupt[:2] == [INTERRUPT, inv[1]] and interrupt[2]["mode"] == "killnowait", interrupt
    await _until(lambda: not b.cluster_parts[-1].stand_ins, 5, "the stand-in to go")
    callee.drop()


async def _unused():  # keep imports used while the file grows
    await sleep(0)
    return defer, RegisterOptions, RESULT, YIELD, CANCEL
