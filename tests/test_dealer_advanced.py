"""The dealer's Advanced Profile over real sockets (issue 7): progressive results and invocations,
call canceling, call timeouts, pattern-based and shared registrations, payload passthru."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions
from twisted.internet import defer

from router import dealer as dealer_mod
from tests.helpers.peer import PLAIN, quiet, registered, rpc_joined
from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def node(spread):
    """Every test here runs on one node and on two nodes of a cluster with its clients spread."""
    return spread

CALL, RESULT, REGISTER, REGISTERED, INVOCATION, INTERRUPT, YIELD, ERROR, CANCEL = 48, 50, 64, 65, 68, 69, 70, 8, 49
CANCELING_CALLEE = {"caller": {"features": {"progressive_call_results": True}},
                    "callee": {"features": {"call_canceling": True, "progressive_call_results": True,
                                            "progressive_call_invocations": True}}}


async def _register_error(peer, procedure: str, options: dict, request: int = 9) -> str:
    peer.send([REGISTER, request, options, procedure])
    reply = await peer.recv()
    assert reply[:3] == [ERROR, REGISTER, request], reply
    return reply[4]


def _dealer(node):
    return node.realm_router("realm1").dealer


# -- announcement ----------------------------------------------------------------------------------
@ensure
async def test_welcome_announces_the_dealer_features(node, serializer):
    peer = await raw_connect(node.url, serializer)
    features = (await peer.hello())[2]["roles"]["dealer"]["features"]
    for name in ("progressive_call_results", "progressive_call_invocations", "call_canceling", "call_timeout",
                 "caller_identification", "pattern_based_registration", "shared_registration",
                 "payload_passthru_mode"):
        assert features.get(name) is True, name


# -- progressive call results ----------------------------------------------------------------------
@ensure
async def test_progressive_results_reach_a_caller_that_asked(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)

    async def count(n, details):
        assert details.progress is not None  # the router passed receive_progress on
        for i in range(n):
            details.progress(i, note="partial")
            await sleep(0.01)
        return "done"

    await callee.register(count, "com.example.count", options=RegisterOptions(details_arg="details"))
    progress = []
    result = await with_timeout(caller.call("com.example.count", 3, options=CallOptions(
        on_progress=lambda i, note: progress.append((i, note)))))
    assert result == "done"
    assert progress == [(0, "partial"), (1, "partial"), (2, "partial")]
    assert _dealer(node).pending() == 0


@ensure
async def test_no_progress_for_a_caller_that_did_not_ask(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)
    seen = []

    def count(details):
        seen.append(details.progress)
        return "only the result"

    await callee.register(count, "com.example.count", options=RegisterOptions(details_arg="details"))
    assert await caller.call("com.example.count") == "only the result"
    assert seen == [None]


@ensure
async def test_progressive_yields_to_a_caller_that_did_not_ask_are_dropped(node, serializer):
    callee = await rpc_joined(node, serializer, CANCELING_CALLEE)
    caller = await rpc_joined(node, serializer)
    await registered(callee, "com.example.p")
    caller.send([CALL, 1, {}, "com.example.p"])
    inv = await callee.recv()
    assert "receive_progress" not in inv[3]
    assert "procedure" not in inv[3]  # an exact registration: the callee knows its URI
    callee.send([YIELD, inv[1], {"progress": True}, ["chunk"]])
    callee.send([YIELD, inv[1], {}, ["final"]])
    assert await caller.recv() == [RESULT, 1, {}, ["final"]]


# -- progressive call invocations ------------------------------------------------------------------
@ensure
async def test_progressive_call_invocations_stream_to_one_callee(node, serializer):
    callee = await rpc_joined(node, serializer, CANCELING_CALLEE)
    caller = await rpc_joined(node, serializer)
    await registered(callee, "com.example.upload")
    caller.send([CALL, 5, {"progress": True}, "com.example.upload", ["part-1"]])
    first = await callee.recv()
    assert first[0] == INVOCATION and first[3].get("progress") is True and first[4] == ["part-1"]
    caller.send([CALL, 5, {"progress": True}, "com.example.upload", ["part-2"]])
    caller.send([CALL, 5, {}, "com.example.upload", ["last"]])
    second, last = await callee.recv(), await callee.recv()
    assert second == [INVOCATION, first[1], first[2], {"progress": True}, ["part-2"]]
    assert last == [INVOCATION, first[1], first[2], {}, ["last"]]
    callee.send([YIELD, first[1], {}, ["stored"]])
    assert await caller.recv() == [RESULT, 5, {}, ["stored"]]
    # The call is over: the same request id starts a new call now.
    caller.send([CALL, 5, {}, "com.example.upload", ["again"]])
    assert (await callee.recv())[4] == ["again"]


@ensure
async def test_progressive_invocation_to_a_callee_without_the_feature_is_refused(node, serializer):
    callee = await rpc_joined(node, serializer)
    caller = await rpc_joined(node, serializer)
    await registered(callee, "com.example.upload")
    caller.send([CALL, 5, {"progress": True}, "com.example.upload", ["part-1"]])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 5] and reply[4] == "wamp.error.feature_not_supported"
    await quiet(callee)
    assert _dealer(node).pending() == 0


@ensure
async def test_a_second_call_with_an_id_in_flight_is_a_protocol_violation(node):
    callee = await rpc_joined(node)
    caller = await rpc_joined(node)
    await registered(callee, "com.example.p")
    caller.send([CALL, 5, {}, "com.example.p"])
    await callee.recv()
    caller.send([CALL, 5, {}, "com.example.p"])
    abort = await caller.recv()
    assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation"


# -- call canceling ----------------------------------------------------------------------------------
async def _call_in_flight(node, serializer, callee_roles=CANCELING_CALLEE, options=None):
    callee = await rpc_joined(node, serializer, callee_roles)
    caller = await rpc_joined(node, serializer)
    await registered(callee, "com.example.slow")
    caller.send([CALL, 3, options or {}, "com.example.slow"])
    inv = await callee.recv()
    assert inv[0] == INVOCATION
    return callee, caller, inv[1]


@ensure
async def test_cancel_skip_answers_the_caller_and_leaves_the_callee_alone(node, serializer):
    callee, caller, inv_id = await _call_in_flight(node, serializer)
    caller.send([CANCEL, 3, {"mode": "skip"}])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled"
    await quiet(callee)  # no INTERRUPT
    callee.send([YIELD, inv_id, {}, ["late"]])  # ignored
    await quiet(caller)
    assert _dealer(node).pending() == 0


@ensure
async def test_cancel_kill_interrupts_and_waits_for_the_callee(node, serializer):
    callee, caller, inv_id = await _call_in_flight(node, serializer)
    caller.send([CANCEL, 3, {"mode": "kill"}])
    assert await callee.recv() == [INTERRUPT, inv_id, {"mode": "kill", "reason": "wamp.error.canceled"}]
    await quiet(caller, 0.1)  # kill: the caller waits for the callee
    caller.send([CANCEL, 3, {"mode": "kill"}])  # a second cancel changes nothing
    await quiet(callee, 0.1)
    callee.send([ERROR, INVOCATION, inv_id, {}, "com.example.stopped", ["cleaned up"]])
    reply = await caller.recv()
    assert reply == [ERROR, CALL, 3, {}, "wamp.error.canceled", ["cleaned up"]]
    assert _dealer(node).pending() == 0


@ensure
async def test_cancel_kill_then_a_result_still_reports_canceled(node):
    callee, caller, inv_id = await _call_in_flight(node, "json")
    caller.send([CANCEL, 3, {"mode": "kill"}])
    await callee.recv()
    callee.send([YIELD, inv_id, {}, ["finished anyway"]])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled"


@ensure
async def test_cancel_killnowait_answers_at_once_and_interrupts(node, serializer):
    callee, caller, inv_id = await _call_in_flight(node, serializer)
    caller.send([CANCEL, 3, {"mode": "killnowait"}])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.canceled"
    assert await callee.recv() == [INTERRUPT, inv_id, {"mode": "killnowait", "reason": "wamp.error.canceled"}]
    callee.send([ERROR, INVOCATION, inv_id, {}, "wamp.error.canceled"])  # ignored
    await quiet(caller)


@ensure
async def test_cancel_without_mode_is_killnowait(node):
    callee, caller, inv_id = await _call_in_flight(node, "json")
    caller.send([CANCEL, 3, {}])
    assert (await caller.recv())[4] == "wamp.error.canceled"
    assert (await callee.recv())[2]["mode"] == dealer_mod.DEFAULT_CANCEL_MODE == "killnowait"


@ensure
async def test_a_callee_without_call_canceling_gets_no_interrupt(node, serializer):
    callee, caller, inv_id = await _call_in_flight(node, serializer, callee_roles=PLAIN)
    caller.send([CANCEL, 3, {"mode": "kill"}])  # degrades to skip
    assert (await caller.recv())[4] == "wamp.error.canceled"
    await quiet(callee)


@ensure
async def test_cancel_of_an_unknown_or_finished_call_is_harmless(node, serializer):
    callee, caller, inv_id = await _call_in_flight(node, serializer)
    caller.send([CANCEL, 999, {"mode": "kill"}])
    callee.send([YIELD, inv_id, {}, ["ok"]])
    assert await caller.recv() == [RESULT, 3, {}, ["ok"]]
    caller.send([CANCEL, 3, {"mode": "killnowait"}])  # finished
    await quiet(callee)
    await quiet(caller)


@ensure
async def test_cancel_with_an_unknown_mode_is_a_protocol_violation(node):
    callee, caller, _ = await _call_in_flight(node, "json")
    caller.send([CANCEL, 3, {"mode": "gently"}])
    abort = await caller.recv()
    assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation"
    await sleep(0.05)
    assert _dealer(node).pending() == 0


@ensure
async def test_autobahn_caller_cancels_and_autobahn_callee_is_interrupted(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)
    started, interrupted = defer.Deferred(), defer.Deferred()

    def slow():
        started.callback(None)
        return defer.Deferred(lambda d: interrupted.callback("interrupted"))

    await callee.register(slow, "com.example.slow")
    call = caller.call("com.example.slow")
    await with_timeout(started)
    call.cancel()
    assert await with_timeout(interrupted) == "interrupted"
    with pytest.raises(defer.CancelledError):
        await call
    await sleep(0.1)
    assert _dealer(node).pending() == 0
    assert await caller.call("wamp.session.count") == 2  # both still joined


# -- call timeout ------------------------------------------------------------------------------------
@ensure
async def test_call_timeout_errors_the_caller_and_interrupts_the_callee(node, serializer):
    callee, caller, inv_id = await _call_in_flight(node, serializer, options={"timeout": 150})
    reply = await caller.recv(seconds=3)
    assert reply[:3] == [ERROR, CALL, 3] and reply[4] == "wamp.error.timeout"
    assert await callee.recv() == [INTERRUPT, inv_id, {"mode": "killnowait", "reason": "wamp.error.timeout"}]
    callee.send([YIELD, inv_id, {}, ["too late"]])
    await quiet(caller)
    assert _dealer(node).pending() == 0


@ensure
async def test_a_call_answered_in_time_is_not_timed_out(node, serializer):
    callee, caller, inv_id = await _call_in_flight(node, serializer, options={"timeout": 200})
    callee.send([YIELD, inv_id, {}, ["quick"]])
    assert await caller.recv() == [RESULT, 3, {}, ["quick"]]
    await sleep(0.35)
    assert caller.inbox.pending == [] and callee.inbox.pending == []


@ensure
async def test_autobahn_call_timeout(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)
    interrupted = defer.Deferred()
    await callee.register(lambda: defer.Deferred(lambda d: interrupted.callback(True)), "com.example.slow")
    with pytest.raises(ApplicationError) as e:
        # autobahn-python puts CallOptions.timeout on the wire as given: the spec's unit, milliseconds.
        await with_timeout(caller.call("com.example.slow", options=CallOptions(timeout=200)))
    assert e.value.error == "wamp.error.timeout"
    assert await with_timeout(interrupted) is True


@pytest.mark.parametrize("timeout", [-1, 1.5, "10", True])
@ensure
async def test_invalid_timeout_is_refused(node, timeout):
    callee = await rpc_joined(node)
    caller = await rpc_joined(node)
    await registered(callee, "com.example.p")
    caller.send([CALL, 1, {"timeout": timeout}, "com.example.p"])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 1] and reply[4] == "wamp.error.invalid_argument"
    await quiet(callee, 0.1)


# -- caller leaving ----------------------------------------------------------------------------------
@ensure
async def test_caller_leaving_interrupts_a_callee_that_understands(node, serializer):
    callee, caller, inv_id = await _call_in_flight(node, serializer)
    caller.drop()
    assert await callee.recv() == [INTERRUPT, inv_id, {"mode": "killnowait", "reason": "wamp.error.canceled"}]
    assert _dealer(node).pending() == 0


# -- pattern-based registrations ---------------------------------------------------------------------
@ensure
async def test_prefix_and_wildcard_registrations_carry_the_called_procedure(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)
    opts = {"details_arg": "details"}
    await callee.register(lambda details: ("prefix", details.procedure), "com.example.",
                          options=RegisterOptions(match="prefix", **opts))
    await callee.register(lambda details: ("wildcard", details.procedure), "com..update",
                          options=RegisterOptions(match="wildcard", **opts))
    await callee.register(lambda details: ("exact", details.procedure), "com.example.exact",
                          options=RegisterOptions(**opts))
    assert await caller.call("com.example.a.b") == ["prefix", "com.example.a.b"]
    assert await caller.call("com.thing.update") == ["wildcard", "com.thing.update"]
    assert await caller.call("com.example.exact") == ["exact", "com.example.exact"]  # autobahn fills it in
    assert await caller.call("com.example.update") == ["prefix", "com.example.update"]  # prefix beats wildcard
    with pytest.raises(ApplicationError) as e:
        await caller.call("org.example.a")
    assert e.value.error == "wamp.error.no_such_procedure"


@ensure
async def test_the_longest_prefix_wins(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)
    for prefix in ("com.", "com.example.", "com.example.deep."):
        await callee.register(lambda _p=prefix: _p, prefix, options=RegisterOptions(match="prefix"))
    assert await caller.call("com.example.deep.x") == "com.example.deep."
    assert await caller.call("com.example.x") == "com.example."
    assert await caller.call("com.other") == "com."


@ensure
async def test_the_most_concrete_wildcard_wins(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)
    for pattern in ("com...", "com.example..", "com..x."):
        await callee.register(lambda _p=pattern: _p, pattern, options=RegisterOptions(match="wildcard"))
    assert await caller.call("com.example.x.y") == "com.example.."  # concrete earlier beats later
    assert await caller.call("com.other.x.y") == "com..x."
    assert await caller.call("com.a.b.c") == "com..."


@ensure
async def test_pattern_registrations_never_catch_the_meta_api(node, serializer):
    caller = await connect(node.url, serializer)
    peer = await rpc_joined(node, serializer)
    await registered(peer, "wamp", {"match": "prefix"})  # not the reserved "wamp." itself
    await registered(peer, ".session.count", {"match": "wildcard"}, request=2)
    for _ in range(50):  # on two nodes, another node's session is counted once its record is in Redis (~20 ms)
        if (count := await caller.call("wamp.session.count")) == 2:
            break
        await sleep(0.02)
    assert count == 2
    with pytest.raises(ApplicationError) as e:
        await caller.call("wamp.nothing.here")
    assert e.value.error == "wamp.error.no_such_procedure"


@pytest.mark.parametrize("procedure,options,uri", [
    ("com.example.", {"match": "exact"}, "wamp.error.invalid_uri"),
    ("com..x", {"match": "exact"}, "wamp.error.invalid_uri"),
    ("com. x", {"match": "prefix"}, "wamp.error.invalid_uri"),
    ("com.#.x", {"match": "wildcard"}, "wamp.error.invalid_uri"),
    ("wamp.session.", {"match": "prefix"}, "wamp.error.invalid_uri"),
    ("com.x", {"match": "regex"}, "wamp.error.invalid_argument"),
    ("com.x", {"invoke": "fastest"}, "wamp.error.invalid_argument"),
])
@ensure
async def test_invalid_registrations(node, procedure, options, uri):
    peer = await rpc_joined(node)
    assert await _register_error(peer, procedure, options) == uri
    assert _dealer(node).size() == 0


@ensure
async def test_same_uri_under_different_match_policies_are_different_registrations(node, serializer):
    peer = await rpc_joined(node, serializer)
    ids = {await registered(peer, "com.example", {"match": m}, request=i)
           for i, m in enumerate(("exact", "prefix", "wildcard"), 1)}
    assert len(ids) == 3 and _dealer(node).size() == 3


# -- shared registrations ------------------------------------------------------------------------------
async def _shared(node, serializer, invoke: str, n: int = 3):
    callees = [await connect(node.url, serializer) for _ in range(n)]
    regs = []
    for i, c in enumerate(callees):
        regs.append(await c.register(lambda _i=i: _i, "com.example.shared", options=RegisterOptions(invoke=invoke)))
    assert len({r.id for r in regs}) == 1  # one registration, several callees
    return callees, regs


@ensure
async def test_roundrobin_takes_turns(node, serializer):
    _, _ = await _shared(node, serializer, "roundrobin")
    caller = await connect(node.url, serializer)
    assert [await caller.call("com.example.shared") for _ in range(6)] == [0, 1, 2, 0, 1, 2]


@ensure
async def test_first_and_last(node, serializer):
    callees, _ = await _shared(node, serializer, "first")
    caller = await connect(node.url, serializer)
    assert {await caller.call("com.example.shared") for _ in range(4)} == {0}
    callees[0].leave()
    await with_timeout(callees[0].disconnected)
    await sleep(0.05)
    assert await caller.call("com.example.shared") == 1  # the next in line

    for i in range(3):
        other = await connect(node.url, serializer)
        await other.register(lambda _i=i: _i, "com.example.last", options=RegisterOptions(invoke="last"))
    assert {await caller.call("com.example.last") for _ in range(4)} == {2}


@ensure
async def test_random_reaches_every_callee(node, serializer):
    await _shared(node, serializer, "random")
    caller = await connect(node.url, serializer)
    seen = [await caller.call("com.example.shared") for _ in range(60)]
    assert set(seen) == {0, 1, 2}


@ensure
async def test_single_refuses_a_second_callee_and_policies_do_not_mix(node, serializer):
    a = await rpc_joined(node, serializer)
    b = await rpc_joined(node, serializer)
    await registered(a, "com.example.one")
    assert await _register_error(b, "com.example.one", {}) == "wamp.error.procedure_already_exists"
    await registered(a, "com.example.rr", {"invoke": "roundrobin"}, request=2)
    uri = await _register_error(b, "com.example.rr", {"invoke": "random"})
    assert uri == "wamp.error.procedure_exists_with_different_invocation_policy"
    uri = await _register_error(b, "com.example.rr", {})
    assert uri == "wamp.error.procedure_exists_with_different_invocation_policy"
    # The same session twice in one shared registration is refused too.
    assert await _register_error(a, "com.example.rr", {"invoke": "roundrobin"}) == "wamp.error.procedure_already_exists"


@ensure
async def test_shared_registration_lives_until_its_last_callee_goes(node, serializer):
    callees, regs = await _shared(node, serializer, "roundrobin")
    caller = await connect(node.url, serializer)
    await regs[1].unregister()
    assert [await caller.call("com.example.shared") for _ in range(4)] == [0, 2, 0, 2]
    callees[0].disconnect()
    await with_timeout(callees[0].disconnected)
    await sleep(0.05)
    assert await caller.call("com.example.shared") == 2
    assert _dealer(node).size() == 1
    await regs[2].unregister()
    assert _dealer(node).size() == 0
    with pytest.raises(ApplicationError):
        await caller.call("com.example.shared")


@ensure
async def test_meta_api_sees_shared_and_pattern_registrations(node, serializer):
    watcher = await connect(node.url, serializer)
    events: defer.DeferredQueue = defer.DeferredQueue()
    for topic in ("wamp.registration.on_create", "wamp.registration.on_register",
                  "wamp.registration.on_unregister", "wamp.registration.on_delete"):
        await watcher.subscribe(lambda *a, _t=topic: events.put((_t, list(a))), topic)
    callees, regs = await _shared(node, serializer, "roundrobin", n=2)
    sids = [c.welcome.session for c in callees]
    reg_id = regs[0].id
    first = [await with_timeout(events.get()) for _ in range(3)]
    # On two nodes each node's events keep their order, but two nodes' events may arrive either way.
    assert [e[0] for e in first].count("wamp.registration.on_create") == 1, first
    assert first.index(("wamp.registration.on_register", [sids[0], reg_id])) > \
        [e[0] for e in first].index("wamp.registration.on_create"), first
    assert ("wamp.registration.on_register", [sids[1], reg_id]) in first, first
    assert sorted(await watcher.call("wamp.registration.list_callees", reg_id)) == sorted(sids)
    assert await watcher.call("wamp.registration.count_callees", reg_id) == 2
    assert (await watcher.call("wamp.registration.get", reg_id))["invoke"] == "roundrobin"
    prefix = await callees[0].register(lambda: None, "com.example.", options=RegisterOptions(match="prefix"))
    listed = await watcher.call("wamp.registration.list")
    assert listed == {"exact": [reg_id], "prefix": [prefix.id], "wildcard": []}
    assert await watcher.call("wamp.registration.lookup", "com.example.", {"match": "prefix"}) == prefix.id
    assert await watcher.call("wamp.registration.match", "com.example.other") == prefix.id
    assert await watcher.call("wamp.registration.match", "com.example.shared") == reg_id
    await regs[0].unregister()
    while (item := await with_timeout(events.get()))[0] != "wamp.registration.on_unregister":
        pass
    assert item == ("wamp.registration.on_unregister", [sids[0], reg_id])
    await regs[1].unregister()
    assert await with_timeout(events.get()) == ("wamp.registration.on_unregister", [sids[1], reg_id])
    assert await with_timeout(events.get()) == ("wamp.registration.on_delete", [sids[1], reg_id])


# -- payload passthru ------------------------------------------------------------------------------------
PPT_ROLES = {"caller": {"features": {"payload_passthru_mode": True}},
             "callee": {"features": {"payload_passthru_mode": True}}}


@ensure
async def test_payload_passthru_options_travel_untouched(node, serializer):
    callee = await rpc_joined(node, serializer, PPT_ROLES)
    caller = await rpc_joined(node, serializer, PPT_ROLES)
    await registered(callee, "com.example.e2ee")
    ppt = {"ppt_scheme": "x_custom", "ppt_serializer": "cbor", "ppt_cipher": "xsalsa20poly1305", "ppt_keyid": "k1"}
    caller.send([CALL, 1, {**ppt}, "com.example.e2ee", ["AW9wYXF1ZQ=="]])
    inv = await callee.recv()
    assert inv[3] == ppt and inv[4] == ["AW9wYXF1ZQ=="]
    callee.send([YIELD, inv[1], {"ppt_scheme": "x_custom", "ppt_keyid": "k2"}, ["AnNlYWxlZA=="]])
    assert await caller.recv() == [RESULT, 1, {"ppt_scheme": "x_custom", "ppt_keyid": "k2"}, ["AnNlYWxlZA=="]]
    for request, bad in ((2, {"ppt_scheme": 7}), (3, {"ppt_scheme": ""}), (4, {"ppt_keyid": "k"}),
                         (5, {"ppt_scheme": "x", "ppt_cipher": 1})):
        caller.send([CALL, request, bad, "com.example.e2ee", []])
        reply = await caller.recv()
        assert reply[:3] == [ERROR, CALL, request] and reply[4] == "wamp.error.invalid_argument", bad
    await quiet(callee, 0.1)


@ensure
async def test_payload_passthru_needs_both_peers_to_announce_it(node, serializer):
    plain_callee = await rpc_joined(node, serializer)
    caller = await rpc_joined(node, serializer, PPT_ROLES)
    await registered(plain_callee, "com.example.e2ee")
    caller.send([CALL, 1, {"ppt_scheme": "x_custom"}, "com.example.e2ee", []])
    reply = await caller.recv()
    assert reply[:3] == [ERROR, CALL, 1] and reply[4] == "wamp.error.feature_not_supported"
    plain_caller = await rpc_joined(node, serializer)
    plain_caller.send([CALL, 1, {"ppt_scheme": "x_custom", "timeout": 50}, "com.example.e2ee", []])
    abort = await plain_caller.recv()
    assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation"
    await quiet(plain_callee, 0.1)
    assert _dealer(node).pending() == 0
