"""RPC across the nodes of a cluster (issue 13, point 2, and the registration half of point 3): two
in-process nodes on the test's redis-server, the caller on one node and the callee on the other."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.exception import PayloadExceededError
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions
from twisted.internet import defer

from router.cluster.limits import MAX_ITEM_BYTES
from tests.helpers.clients import leave_connected
from tests.helpers.nodes import known
from tests.helpers.peer import joined, quiet, registered
from tests.helpers.poll import until
from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred

CALL, RESULT, REGISTER, REGISTERED, INVOCATION, INTERRUPT, YIELD, ERROR, CANCEL = 48, 50, 64, 65, 68, 69, 70, 8, 49
CANCELING = {"caller": {"features": {"progressive_call_results": True, "call_canceling": True}},
             "callee": {"features": {"call_canceling": True, "progressive_call_results": True,
                                     "progressive_call_invocations": True}}}


async def _peer(node, serializer: str = "json", roles: dict | None = None):
    """A raw peer that joined, announcing canceling and progressive calls unless told otherwise."""
    return await joined(node, serializer, roles or CANCELING)


def _leave(*clients) -> None:
    leave_connected(clients)


@ensure
async def test_a_call_crosses_nodes_both_ways(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    on_a, on_b = await connect(a.url), await connect(b.url)
    try:
        await on_b.register(lambda x, y=0: x + y, "com.example.add")
        await on_a.register(lambda s: s.upper(), "com.example.upper")
        await known(a, "com.example.add")
        await known(b, "com.example.upper")
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
        await known(a, "com.example.fails")
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
    await registered(pa, "com.example.shared", {"invoke": "roundrobin"})
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
    await until(lambda: not a.redis._factory.size, 5, "the node to notice Redis is gone")
    pa.send([REGISTER, 1, {}, "com.example.x"])
    reply = await pa.recv()
    assert reply[:3] == [ERROR, REGISTER, 1] and reply[4] == "courtyard.error.cluster_unavailable", reply
    pa.drop()
    redis_server.start()
    await until(lambda: a.redis._factory.size, 10, "the node to reconnect")


@ensure
async def test_callee_node_killed_mid_call_callers_get_canceled(make_cluster):
    """(In-process: the callee's node is stopped without a word, as a kill -9 would leave it;
    tests/test_cluster_rpc_kill.py does it to a real process.)"""
    a, b = await make_cluster("a"), await make_cluster("b")
    caller = await _peer(a)
    callee = await _peer(b)
    await registered(callee, "com.example.slow")
    await known(a, "com.example.slow")
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
    await registered(callee, "com.example.slow")
    await known(a, "com.example.slow")
    caller.send([CALL, 1, {}, "com.example.slow", [1]])
    inv = await callee.recv()
    assert inv[0] == INVOCATION, inv
    caller.drop()
    interrupt = await callee.recv()
    assert interrupt[:2] == [INTERRUPT, inv[1]] and interrupt[2]["mode"] == "killnowait", interrupt
    await until(lambda: not b.cluster_parts[1].stand_ins, 5, "the stand-in to go")
    callee.drop()


# -- shared and pattern registrations across nodes ---------------------------------------------------
async def _shared_over_two_nodes(a, b, invoke: str):
    """Callees 0 and 2 on b, 1 on a (registered in that order); the caller on a."""
    callees = []
    for i, node in enumerate((b, a, b)):
        c = await connect(node.url)
        await c.register(lambda _i=i: _i, "com.example.shared", options=RegisterOptions(invoke=invoke))
        callees.append(c)
    await known(a, "com.example.shared", callees=3)
    caller = await connect(a.url)
    return callees, caller


@ensure
async def test_roundrobin_takes_turns_over_every_node(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callees, caller = await _shared_over_two_nodes(a, b, "roundrobin")
    try:
        assert [await caller.call("com.example.shared") for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    finally:
        _leave(caller, *callees)


@ensure
async def test_first_and_last_are_the_cluster_s_first_and_last(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callees, caller = await _shared_over_two_nodes(a, b, "first")
    try:
        assert {await caller.call("com.example.shared") for _ in range(3)} == {0}  # on b
        callees[0].leave()
        await known(a, "com.example.shared", callees=2)
        assert await caller.call("com.example.shared") == 1  # the next in line, on a
        last = []
        for i, node in enumerate((a, b)):
            c = await connect(node.url)
            await c.register(lambda _i=i: _i, "com.example.last", options=RegisterOptions(invoke="last"))
            last.append(c)
        await known(a, "com.example.last", callees=2)
        assert {await caller.call("com.example.last") for _ in range(3)} == {1}  # on b
    finally:
        _leave(caller, *callees, *last)


@ensure
async def test_random_reaches_callees_on_every_node(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callees, caller = await _shared_over_two_nodes(a, b, "random")
    try:
        assert {await caller.call("com.example.shared") for _ in range(40)} == {0, 1, 2}
    finally:
        _leave(caller, *callees)


@ensure
async def test_pattern_precedence_is_the_same_across_nodes(make_cluster):
    """exact (b) beats prefix (a); the longest prefix (b) beats a shorter one (a); the most concrete
    wildcard wins; the called procedure is told to pattern callees on the other node."""
    a, b = await make_cluster("a"), await make_cluster("b")
    on_a, on_b, caller_a, caller_b = [await connect(n.url) for n in (a, b, a, b)]
    try:
        await on_a.register(lambda **kw: ("a-prefix", kw.get("p")), "com.example.",
                            options=RegisterOptions(match="prefix", details_arg="details"))
        await on_b.register(lambda: "b-long-prefix", "com.example.deep.", options=RegisterOptions(match="prefix"))
        await on_b.register(lambda: "b-exact", "com.example.deep.x")
        await on_a.register(lambda: "a-wild-1", "org..x", options=RegisterOptions(match="wildcard"))
        await on_b.register(lambda: "b-wild-2", "org.y.x", options=RegisterOptions(match="wildcard"))
        await on_b.register(lambda details: details.procedure, "net..z",
                            options=RegisterOptions(match="wildcard", details_arg="details"))
        await known(a, "com.example.deep.x")
        await known(b, "com.example.", "prefix")
        await known(a, "net..z", "wildcard")
        for caller in (caller_a, caller_b):
            assert await caller.call("com.example.deep.x") == "b-exact"
            assert await caller.call("com.example.deep.y") == "b-long-prefix"
            assert (await caller.call("com.example.other"))[0] == "a-prefix"
            assert await caller.call("org.q.x") == "a-wild-1"
            assert await caller.call("org.y.x") == "b-wild-2"
        assert await caller_a.call("net.q.z") == "net.q.z"
    finally:
        _leave(on_a, on_b, caller_a, caller_b)


# -- Advanced Profile features across nodes -----------------------------------------------------------
@ensure
async def test_progressive_results_cross_nodes(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller = await _peer(b), await _peer(a)
    await registered(callee, "com.example.p")
    await known(a, "com.example.p")
    caller.send([CALL, 1, {"receive_progress": True}, "com.example.p"])
    inv = await callee.recv()
    assert inv[3].get("receive_progress") is True, inv
    callee.send([YIELD, inv[1], {"progress": True}, ["one"]])
    callee.send([YIELD, inv[1], {"progress": True}, ["two"]])
    callee.send([YIELD, inv[1], {}, ["done"]])
    assert await caller.recv() == [RESULT, 1, {"progress": True}, ["one"]]
    assert await caller.recv() == [RESULT, 1, {"progress": True}, ["two"]]
    assert await caller.recv() == [RESULT, 1, {}, ["done"]]
    assert not a.realm_router("realm1").dealer._calls  # the forwarded call is forgotten
    await until(lambda: not b.cluster_parts[1].stand_ins, 2, "the stand-in to go")
    callee.drop()
    caller.drop()


@ensure
async def test_progressive_invocations_cross_nodes(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller = await _peer(b), await _peer(a)
    await registered(callee, "com.example.upload")
    await known(a, "com.example.upload")
    caller.send([CALL, 5, {"progress": True}, "com.example.upload", ["part-1"]])
    first = await callee.recv()
    assert first[0] == INVOCATION and first[3].get("progress") is True and first[4] == ["part-1"]
    caller.send([CALL, 5, {"progress": True}, "com.example.upload", ["part-2"]])
    caller.send([CALL, 5, {}, "com.example.upload", ["last"]])
    assert await callee.recv() == [INVOCATION, first[1], first[2], {"progress": True}, ["part-2"]]
    assert await callee.recv() == [INVOCATION, first[1], first[2], {}, ["last"]]
    callee.send([YIELD, first[1], {}, ["stored"]])
    assert await caller.recv() == [RESULT, 5, {}, ["stored"]]
    caller.send([CALL, 5, {}, "com.example.upload", ["again"]])  # a new call now
    assert (await callee.recv())[4] == ["again"]
    callee.drop()
    caller.drop()


async def _in_flight(a, b, options: dict | None = None):
    callee, caller = await _peer(b), await _peer(a)
    await registered(callee, "com.example.slow")
    await known(a, "com.example.slow")
    caller.send([CALL, 3, options or {}, "com.example.slow"])
    inv = await callee.recv()
    assert inv[0] == INVOCATION, inv
    return callee, caller, inv[1]


@ensure
async def test_cancel_skip_across_nodes(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller, inv_id = await _in_flight(a, b)
    caller.send([CANCEL, 3, {"mode": "skip"}])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled", reply
    callee.send([YIELD, inv_id, {}, ["late"]])
    await quiet(callee)
    await quiet(caller)


@ensure
async def test_cancel_kill_across_nodes_waits_for_the_callee(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller, inv_id = await _in_flight(a, b)
    caller.send([CANCEL, 3, {"mode": "kill"}])
    assert await callee.recv() == [INTERRUPT, inv_id, {"mode": "kill", "reason": "wamp.error.canceled"}]
    await quiet(caller)
    callee.send([ERROR, INVOCATION, inv_id, {}, "wamp.error.canceled"])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled", reply


@ensure
async def test_cancel_killnowait_across_nodes(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller, inv_id = await _in_flight(a, b)
    caller.send([CANCEL, 3, {"mode": "killnowait"}])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled", reply
    assert await callee.recv() == [INTERRUPT, inv_id, {"mode": "killnowait", "reason": "wamp.error.canceled"}]
    assert not a.realm_router("realm1").dealer._calls


@ensure
async def test_call_timeout_across_nodes(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller, inv_id = await _in_flight(a, b, {"timeout": 150})
    reply = await caller.recv(seconds=3)
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.timeout", reply
    assert await callee.recv() == [INTERRUPT, inv_id, {"mode": "killnowait", "reason": "wamp.error.timeout"}]


@ensure
async def test_autobahn_caller_cancels_across_nodes(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller = await connect(b.url, "msgpack"), await connect(a.url, "json")
    try:
        started, interrupted = defer.Deferred(), defer.Deferred()

        def slow():
            started.callback(None)
            return defer.Deferred(lambda d: interrupted.callback("interrupted"))

        await callee.register(slow, "com.example.slow")
        await known(a, "com.example.slow")
        call = caller.call("com.example.slow")
        await with_timeout(started)
        call.cancel()
        assert await with_timeout(interrupted) == "interrupted"
        with pytest.raises(defer.CancelledError):
            await call
    finally:
        _leave(callee, caller)


@ensure
async def test_caller_disclosure_across_nodes(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller = await _peer(b), await raw_connect(a.url)
    hello = await caller.hello()
    welcome = {"session": hello[1], **hello[2]}
    await registered(callee, "com.example.who", {"disclose_caller": True})
    await registered(callee, "com.example.anonymous", request=2)
    await known(a, "com.example.anonymous")
    details = []
    for request, (options, procedure) in enumerate([({}, "com.example.who"), ({}, "com.example.anonymous"),
                                                    ({"disclose_me": True}, "com.example.anonymous")], 1):
        caller.send([CALL, request, options, procedure])
        inv = await callee.recv()
        details.append(inv[3])
        callee.send([YIELD, inv[1], {}, [request]])
        assert await caller.recv() == [RESULT, request, {}, [request]]
    me = {"caller": welcome["session"], "caller_authid": welcome["authid"],
          "caller_authrole": welcome["authrole"]}
    assert details == [me, {}, me], details
    caller.drop()
    callee.drop()


@pytest.mark.parametrize("callee_ser, caller_ser", [("msgpack", "json"), ("json", "msgpack"), ("cbor", "msgpack")])
@ensure
async def test_binary_payloads_cross_nodes_and_serializers(make_cluster, callee_ser, caller_ser):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller = await connect(b.url, callee_ser), await connect(a.url, caller_ser)
    try:
        await callee.register(lambda blob, key=b"": [blob[::-1], type(blob).__name__, key], "com.example.rev")
        await known(a, "com.example.rev")
        payload = bytes(range(256))
        assert await caller.call("com.example.rev", payload, key=b"\x00\xff") == [payload[::-1], "bytes", b"\x00\xff"]
    finally:
        _leave(callee, caller)


PPT = {"caller": {"features": {"payload_passthru_mode": True}}, "callee": {"features": {"payload_passthru_mode": True}}}


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@ensure
async def test_payload_passthru_across_nodes(make_cluster, serializer):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller = await _peer(b, "msgpack", PPT), await _peer(a, serializer, PPT)
    await registered(callee, "com.example.e2ee")
    await known(a, "com.example.e2ee")
    ppt = {"ppt_scheme": "x_custom", "ppt_serializer": "cbor", "ppt_cipher": "xsalsa20poly1305", "ppt_keyid": "k1"}
    blob = "b3BhcXVl" if serializer == "json" else b"\x00\x01opaque\xff"
    caller.send([CALL, 1, {**ppt}, "com.example.e2ee", [blob]])
    inv = await callee.recv()
    assert {k: inv[3][k] for k in ppt} == ppt and inv[4] == [blob], inv
    callee.send([YIELD, inv[1], {**ppt}, [blob[::-1]]])
    assert await caller.recv() == [RESULT, 1, ppt, [blob[::-1]]]
    callee.drop()
    caller.drop()


@ensure
async def test_unregister_on_one_node_reaches_the_other(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller = await connect(b.url), await connect(a.url)
    try:
        reg = await callee.register(lambda: 1, "com.example.once")
        await known(a, "com.example.once")
        assert await caller.call("com.example.once") == 1
        await reg.unregister()
        with pytest.raises(ApplicationError) as e:
            await with_timeout(caller.call("com.example.once"))
        assert e.value.error == "wamp.error.no_such_procedure"
        # registered again, by a callee of the caller's node this time
        await caller.register(lambda: 2, "com.example.once")
        assert await callee.call("com.example.once") == 2
    finally:
        _leave(callee, caller)


# -- the registration meta API, cluster-wide -----------------------------------------------------------
@ensure
async def test_registration_meta_procedures_answer_for_the_whole_cluster(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    on_a, on_b = await connect(a.url), await connect(b.url)
    try:
        shared_a = await on_a.register(lambda: "a", "com.example.shared", options=RegisterOptions(invoke="roundrobin"))
        shared_b = await on_b.register(lambda: "b", "com.example.shared", options=RegisterOptions(invoke="roundrobin"))
        assert shared_a.id == shared_b.id  # one cluster-wide registration id: the first registrant's
        prefix = await on_b.register(lambda: None, "com.example.", options=RegisterOptions(match="prefix"))
        await known(a, "com.example.", "prefix")
        await known(a, "com.example.shared", callees=2)
        for asker in (on_a, on_b):
            assert await asker.call("wamp.registration.list") == {
                "exact": [shared_a.id], "prefix": [prefix.id], "wildcard": []}
            assert await asker.call("wamp.registration.lookup", "com.example.shared") == shared_a.id
            assert await asker.call("wamp.registration.lookup", "com.example.", {"match": "prefix"}) == prefix.id
            assert await asker.call("wamp.registration.match", "com.example.other") == prefix.id
            assert await asker.call("wamp.registration.match", "com.example.shared") == shared_a.id
            got = await asker.call("wamp.registration.get", prefix.id)
            assert (got["id"], got["uri"], got["match"], got["invoke"]) == (prefix.id, "com.example.", "prefix",
                                                                            "single")
            assert await asker.call("wamp.registration.list_callees", shared_a.id) == [
                on_a.welcome.session, on_b.welcome.session]  # in registration order
            assert await asker.call("wamp.registration.count_callees", shared_a.id) == 2
            with pytest.raises(ApplicationError) as e:
                await asker.call("wamp.registration.get", 12345)
            assert e.value.error == "wamp.error.no_such_registration"
        await shared_a.unregister()
        await known(b, "com.example.shared", callees=1)
        assert await on_b.call("wamp.registration.list_callees", shared_a.id) == [on_b.welcome.session]
        assert await on_a.call("com.example.shared") == "b"
    finally:
        _leave(on_a, on_b)


@ensure
async def test_on_create_and_on_delete_fire_once_for_the_cluster(make_cluster):
    """A shared registration with a callee on each node: on_create when its first callee registers, on
    either node; on_delete when its last one goes; on_register/on_unregister for each callee. (Whether a
    meta event also reaches the other node's subscribers is pub/sub's part: counted per watcher here.)"""
    a, b = await make_cluster("a"), await make_cluster("b")
    watchers = [await connect(a.url), await connect(b.url)]
    seen: list[list] = [[], []]
    for w, events in zip(watchers, seen, strict=True):
        for topic in ("on_create", "on_register", "on_unregister", "on_delete"):
            await w.subscribe(lambda sid, what, _t=topic, _e=events: _e.append((_t, sid, what)),
                              f"wamp.registration.{topic}")
    on_a, on_b = await connect(a.url), await connect(b.url)
    try:
        r1 = await on_a.register(lambda: 1, "com.example.s", options=RegisterOptions(invoke="first"))
        r2 = await on_b.register(lambda: 2, "com.example.s", options=RegisterOptions(invoke="first"))
        await r1.unregister()
        await r2.unregister()
        await sleep(0.3)
        sa, sb = on_a.welcome.session, on_b.welcome.session
        for events in seen:  # no watcher hears anything twice
            kinds = [(t, sid) for t, sid, _ in events]
            assert len(kinds) == len(set(kinds)), events
        union = {(t, sid) for events in seen for t, sid, _ in events}
        assert union == {("on_create", sa), ("on_register", sa), ("on_register", sb), ("on_unregister", sa),
                         ("on_unregister", sb), ("on_delete", sb)}, union
    finally:
        _leave(on_a, on_b, *watchers)


@ensure
async def test_redis_restarted_empty_the_nodes_write_their_registrations_again(make_cluster, redis_server):
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, leaver, caller = await connect(b.url), await connect(b.url), await connect(a.url)
    try:
        await callee.register(lambda: "still here", "com.example.kept")
        gone = await leaver.register(lambda: None, "com.example.dropped")
        await known(a, "com.example.dropped")
        redis_server.stop()
        await until(lambda: not a.redis._factory.size and not b.redis._factory.size, 5, "Redis gone for both")
        await gone.unregister()  # while Redis is away: only this node knows
        redis_server.start()
        await until(lambda: redis_server.command("HLEN", "cy:reg:realm1") == 1, 15, "b's registration written again")
        await known(a, "com.example.kept")
        # Until both nodes are connected and listening again, a call across fails at once (canceled).
        await until(lambda: a.redis._factory.size and all(
            redis_server.command("PUBSUB", "NUMSUB", f"cy:bus:node:{n}")[1] == 1 for n in "ab"), 15,
            "both nodes connected and listening again")
        await sleep(0.6)  # their heartbeats see Redis back and resync (a call in flight then is canceled)
        assert await with_timeout(caller.call("com.example.kept")) == "still here"
        with pytest.raises(ApplicationError) as e:
            await with_timeout(caller.call("com.example.dropped"))
        assert e.value.error == "wamp.error.no_such_procedure"
    finally:
        _leave(callee, leaver, caller)


@ensure
async def test_a_callee_that_left_while_redis_was_cut_off_is_removed_when_it_is_back(make_cluster, redis_server):
    slow = {"cluster": {"node_timeout": 10.0}}  # nobody is taken for dead meanwhile: b cleans up itself
    a, b = await make_cluster("a", **slow), await make_cluster("b", **slow)
    leaver, caller = await connect(b.url), await connect(a.url)
    try:
        gone = await leaver.register(lambda: None, "com.example.dropped")
        await known(a, "com.example.dropped")
        redis_server.command("CLIENT", "KILL", "TYPE", "normal")  # every node's command connection, data kept
        await until(lambda: not b.redis._factory.size, 5, "b to lose its connection")
        await gone.unregister()  # only b knows, for now
        await until(lambda: redis_server.command("HLEN", "cy:reg:realm1") == 0, 15, "the stale callee removed")
        with pytest.raises(ApplicationError) as e:
            await with_timeout(caller.call("com.example.dropped"))
        assert e.value.error == "wamp.error.no_such_procedure"
    finally:
        _leave(leaver, caller)


@ensure
async def test_the_caller_s_role_forces_disclosure_on_the_callee_s_node(make_cluster):
    perms = [{"uri": "com.", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"],
              "disclose": ["caller"]}]
    realms = [{"uri": "realm1", "roles": {"anonymous": {"permissions": perms}}}]
    a, b = await make_cluster("a", realms=realms), await make_cluster("b", realms=realms)
    callee, caller = await _peer(b), await raw_connect(a.url)
    hello = await caller.hello()
    await registered(callee, "com.example.audited")
    await known(a, "com.example.audited")
    caller.send([CALL, 1, {}, "com.example.audited"])
    inv = await callee.recv()
    assert inv[3] == {"caller": hello[1], "caller_authid": hello[2]["authid"], "caller_authrole": "anonymous"}
    caller.drop()
    callee.drop()


@ensure
async def test_large_payloads_cross_nodes_up_to_the_bus_s_limit(make_cluster):
    """A call carrying 3 MiB crosses (alone in its bus message); one that the listener accepts (at most
    the bus's 7 MiB in a cluster) but whose bus form is over it cannot cross and the caller hears
    wamp.error.payload_size_exceeded at once, while small calls around it still go."""
    limits = {"listeners": [{"port": 0, "max_message_size": MAX_ITEM_BYTES}]}
    a, b = await make_cluster("a", **limits), await make_cluster("b", **limits)
    callee, caller = await connect(b.url, "msgpack"), await connect(a.url, "msgpack")
    json_callee = None
    try:
        await callee.register(lambda blob: len(blob), "com.example.size")
        await known(a, "com.example.size")
        small = [caller.call("com.example.size", b"x") for _ in range(3)]
        big = caller.call("com.example.size", b"\x01" * (3 * 1024 * 1024))
        assert await with_timeout(big, 10) == 3 * 1024 * 1024
        assert [await with_timeout(d) for d in small] == [1, 1, 1]
        with pytest.raises(PayloadExceededError):  # autobahn's name for wamp.error.payload_size_exceeded
            await with_timeout(caller.call("com.example.size", b"\x02" * (MAX_ITEM_BYTES - 64)), 10)
        assert await with_timeout(caller.call("com.example.size", b"yz")) == 2
        json_callee = await connect(b.url)  # its JSON floats grow past the bus's limit in msgpack
        await json_callee.register(lambda n: [0.5] * n, "com.example.blob")  # answers too large to cross
        await known(a, "com.example.blob")
        with pytest.raises(PayloadExceededError):
            await with_timeout(caller.call("com.example.blob", 1024 * 1024), 10)
        assert len(await with_timeout(caller.call("com.example.blob", 5))) == 5
    finally:
        _leave(*[c for c in (callee, caller, json_callee) if c is not None])


@ensure
async def test_a_registration_made_while_a_node_was_not_listening_is_seen_once_it_is_back(make_cluster,
                                                                                          redis_server):
    """Broadcasts are lost to a node whose bus connection is down; it re-reads the registrations when
    it listens again."""
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller = await connect(b.url), await connect(a.url)
    try:
        redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")  # the buses only; commands still go
        await callee.register(lambda: "made meanwhile", "com.example.meanwhile")
        await until(lambda: all(redis_server.command("PUBSUB", "NUMSUB", f"cy:bus:node:{n}")[1] == 1 for n in "ab"),
                     15, "both nodes listening again")
        await known(a, "com.example.meanwhile")
        assert await with_timeout(caller.call("com.example.meanwhile")) == "made meanwhile"
    finally:
        _leave(callee, caller)


@ensure
async def test_calls_in_flight_when_the_caller_s_node_bus_reconnects_are_canceled(make_cluster, redis_server):
    """Their answers may have been lost with the connection: the caller hears wamp.error.canceled and
    the callee INTERRUPT, rather than both waiting for ever."""
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller, inv_id = await _in_flight(a, b)
    redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
    reply = await caller.recv(seconds=10)
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled", reply
    assert await callee.recv(seconds=10) == [INTERRUPT, inv_id, {"mode": "killnowait", "reason": "wamp.error.canceled"}]
    caller.drop()
    callee.drop()


@ensure
async def test_a_request_id_used_again_after_its_node_gave_up_on_the_call(make_cluster):
    """The caller's node failed a forwarded call without the callee's node hearing of it (its message
    lost); the caller then uses the request id again: the old invocation is dropped (INTERRUPT), the
    new one runs, and only its answer reaches the caller."""
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller, old_inv = await _in_flight(a, b)
    rpc = a.realm_router("realm1").dealer.backend
    [call] = a.realm_router("realm1").dealer.remote_calls()
    rpc.fail(call, "its answer was lost")  # as after a bus reconnect, but without telling b
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled", reply
    caller.send([CALL, 3, {}, "com.example.slow", ["again"]])
    assert await callee.recv() == [INTERRUPT, old_inv, {"mode": "killnowait", "reason": "wamp.error.canceled"}]
    new = await callee.recv()
    assert new[0] == INVOCATION and new[4] == ["again"], new
    callee.send([YIELD, old_inv, {}, ["old"]])
    callee.send([YIELD, new[1], {}, ["new"]])
    assert await caller.recv() == [RESULT, 3, {}, ["new"]]
    await quiet(caller)
    assert b.realm_router("realm1").dealer.pending() == 0
    caller.drop()
    callee.drop()


@ensure
async def test_registers_still_in_redis_count_toward_the_session_s_limit(make_cluster):
    a = await make_cluster("a", limits={"max_registrations_per_session": 3})
    peer = await _peer(a)
    for i in range(1, 6):  # all sent before Redis has answered the first
        peer.send([REGISTER, i, {}, f"com.example.p{i}"])
    replies = [await peer.recv() for _ in range(5)]
    assert sorted(r[0] for r in replies) == [ERROR, ERROR, REGISTERED, REGISTERED, REGISTERED], replies
    assert all(r[4] == "courtyard.error.too_many_registrations" for r in replies if r[0] == ERROR), replies
    peer.drop()


@ensure
async def test_calls_forwarded_to_a_node_that_resyncs_end_there(make_cluster):
    """The callee's node resyncs (its bus reconnected, Redis came back): a CANCEL or a caller's leaving
    may have been lost on the way to it, so its calls from other nodes end: INTERRUPT to the callee,
    wamp.error.canceled to the caller."""
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, caller, inv_id = await _in_flight(a, b)
    b._resync()  # as the bus's hook does when it listens again
    assert await callee.recv() == [INTERRUPT, inv_id, {"mode": "killnowait", "reason": "wamp.error.canceled"}]
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled", reply
    await until(lambda: not b.cluster_parts[1].stand_ins, 2, "the stand-in to go")
    caller.drop()
    callee.drop()


@ensure
async def test_a_registration_confirmed_on_one_node_is_seen_at_once_by_the_meta_api_of_another(make_cluster):
    """REGISTERED on b, then at once wamp.registration.lookup on a: the answer waits until a has every
    registration made before the call (without that, the broadcast sometimes arrives after it)."""
    a, b = await make_cluster("a"), await make_cluster("b")
    callee, asker = await _peer(b), await _peer(a)
    for i in range(1, 151):  # the race shows about once in 100 rounds here
        reg_id = await registered(callee, f"com.example.m{i}", request=i)
        asker.send([CALL, i, {}, "wamp.registration.lookup", [f"com.example.m{i}"]])
        assert await asker.recv() == [RESULT, i, {}, [reg_id]], i
    callee.drop()
    asker.drop()


@ensure
async def test_a_registration_confirmed_on_one_node_is_routed_to_at_once_from_another(make_cluster):
    """REGISTERED on b (a longer prefix), then at once a CALL on a: REGISTERED waits until every other
    node has the registration, so the CALL goes to it, not to the shorter prefix a already knew."""
    a, b = await make_cluster("a"), await make_cluster("b")
    short, longer, caller = await connect(a.url), await connect(b.url), await connect(a.url)
    try:
        await short.register(lambda: "short", "com.", options=RegisterOptions(match="prefix"))
        for i in range(60):
            await longer.register(lambda: "longer", f"com.x{i}.", options=RegisterOptions(match="prefix"))
            assert await with_timeout(caller.call(f"com.x{i}.y")) == "longer", i
    finally:
        _leave(short, longer, caller)
