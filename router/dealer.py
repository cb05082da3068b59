"""The dealer of one realm: REGISTER / UNREGISTER / CALL → INVOCATION → YIELD|ERROR → RESULT|ERROR,
with the Advanced Profile's pattern-based and shared registrations, progressive results and
invocations, call canceling and call timeouts.

The common CALL (exact URI, one callee, no options) costs a dict hit for the registration and a
dict hit each for the caller's and the callee's tables of calls in flight; every Advanced Profile
option is looked at only when the CALL carries options at all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol

from twisted.logger import Logger

from router import lograte, wamp
from router.matching import MATCH_POLICIES, PatternIndex
from router.session import Session

INVOKE_POLICIES = frozenset({"single", "roundrobin", "random", "first", "last"})
CANCEL_MODES = frozenset({"skip", "kill", "killnowait"})
DEFAULT_CANCEL_MODE = "killnowait"  # the caller hears at once, the callee is told to stop
MAX_REGISTRATIONS = 10_000  # per session (limits.max_registrations_per_session)


class Callee:
    """One session's part in a registration (several under a shared registration)."""

    __slots__ = ("session", "disclose_caller", "canceling", "progressive_in", "progressive_out", "passthru")

    def __init__(self, session: Session, options: dict) -> None:
        self.session = session
        self.disclose_caller = options.get("disclose_caller") is True  # the callee wants to know who calls
        self.canceling = session.announces("callee", "call_canceling")  # understands INTERRUPT
        self.progressive_out = session.announces("callee", "progressive_call_results")
        self.progressive_in = session.announces("callee", "progressive_call_invocations")
        self.passthru = session.announces("callee", "payload_passthru_mode")


class Registration:
    __slots__ = ("id", "procedure", "match", "invoke", "callees", "created", "_turn", "in_cluster", "clustered")

    def __init__(self, id: int, procedure: str, match: str, invoke: str) -> None:
        self.id = id
        self.procedure = procedure
        self.match = match
        self.invoke = invoke
        self.callees: list[Callee] = []  # in the order they registered
        self.created = time.time()
        self._turn = 0
        self.in_cluster = False  # registered through the cluster (not the router's own callees)
        self.clustered = False  # in a cluster, callees on other nodes share it: CALLs pick over all

    @property
    def callee(self) -> Session:
        """The first callee (the only one under `single`)."""
        return self.callees[0].session

    def pick(self) -> Callee:
        """The callee the next call goes to, by the registration's invocation policy."""
        callees = self.callees
        if self.invoke == "single" or self.invoke == "first" or len(callees) == 1:
            return callees[0]
        if self.invoke == "last":
            return callees[-1]
        if self.invoke == "random":
            return random.choice(callees)
        self._turn = turn = self._turn % len(callees)
        self._turn += 1
        return callees[turn]


class Invocation:
    """A call in flight: the caller's request id and the callee's invocation id for it."""

    __slots__ = ("id", "caller", "call_id", "callee", "registration", "progress", "streaming", "canceling",
                 "timer")

    def __init__(self, id: int, caller: Session, call_id: int, callee: Callee, registration: Registration):
        self.id = id
        self.caller = caller
        self.call_id = call_id
        self.callee = callee
        self.registration = registration
        self.progress = False  # the caller takes progressive results
        self.streaming = False  # the caller is still sending progressive CALLs
        self.canceling = False  # CANCEL mode kill: INTERRUPT sent, waiting for the callee's answer
        self.timer = None  # the call_timeout's DelayedCall


class RemoteCall:
    """A CALL forwarded to the callee's node (router/cluster/rpc.py), kept in the caller's table of
    calls in flight so that further progressive CALLs and CANCEL follow it there."""

    __slots__ = ("node", "caller", "call_id", "streaming")
    canceling = False

    def __init__(self, node: str, caller: Session, call_id: int, streaming: bool) -> None:
        self.node = node
        self.caller = caller
        self.call_id = call_id
        self.streaming = streaming  # the caller is still sending progressive CALLs


class RegistrationListener(Protocol):
    def registered(self, session_id: int, reg: Registration, created: bool) -> None: ...

    def unregistered(self, session_id: int, reg: Registration, deleted: bool) -> None: ...


# A procedure the router provides itself (the meta API): answers the CALL at once with RESULT or ERROR.
BuiltIn = Callable[[Session, list], None]


class CallRefused(Exception):
    """A CALL option the dealer cannot honour: the caller gets this ERROR and nothing is invoked."""

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(message)
        self.uri = uri
        self.message = message


class Dealer:
    FEATURES: dict[str, bool] = {
        "caller_identification": True, "pattern_based_registration": True, "shared_registration": True,
        "progressive_call_results": True, "progressive_call_invocations": True, "call_canceling": True,
        "call_timeout": True, "payload_passthru_mode": True,
    }

    log = Logger()

    def __init__(self, realm_uri: str, max_pending_calls: int | None = None, clock=None,
                 max_registrations: int = MAX_REGISTRATIONS) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.realm_uri = realm_uri
        self.max_pending_calls = max_pending_calls  # per callee
        self.max_registrations = max_registrations  # per session: each holds its procedure URI
        self.clock = clock
        self._index: PatternIndex[Registration] = PatternIndex()
        self._exact = self._index.exact  # the hot path's dict
        self._by_id: dict[int, Registration] = {}
        self._by_callee: dict[int, dict[int, Registration]] = {}
        self._invocations: dict[int, dict[int, Invocation]] = {}  # callee id → invocation id → call
        self._calls: dict[int, dict[int, Invocation]] = {}  # caller id → call request id → call
        # Told of registration changes (the meta API's on_create/on_register/...); None: nobody asks.
        self.listener: RegistrationListener | None = None
        # Router-provided procedures under the reserved `wamp.` namespace, which no client can
        # register. Consulted only when no exact registration matches, so an ordinary CALL pays nothing.
        self.builtins: dict[str, BuiltIn] = {}
        # In a cluster: registrations and calls across nodes (router/cluster/rpc.py RealmRPC); None alone.
        self.cluster = None

    # -- callee side -----------------------------------------------------------------------------
    def register(self, session: Session, msg: list, capped: bool = True) -> None:
        """REGISTER; `capped` False for the router's own callees (the admin realm's procedures)."""
        request, options, procedure = msg[1], msg[2], msg[3]
        send = session.transport.send
        match = options.get("match", "exact")
        invoke = options.get("invoke", "single")
        if type(match) is not str or match not in MATCH_POLICIES or type(invoke) is not str \
                or invoke not in INVOKE_POLICIES:
            send(wamp.error(wamp.REGISTER, request, wamp.INVALID_ARGUMENT,
                            [f"unknown match {wamp.quote(match)} or invoke {wamp.quote(invoke)} policy"]))
            return
        if not wamp.is_valid_pattern(procedure, match) or wamp.is_reserved(procedure) or procedure in self.builtins:
            send(wamp.error(wamp.REGISTER, request, wamp.INVALID_URI, [wamp.uri_refusal("procedure", procedure)
                            if wamp.too_long(procedure) else
                            f"invalid or reserved procedure URI {wamp.quote(procedure)} (match {match})"]))
            return
        mine = self._by_callee.get(session.id)
        held = len(mine) if mine is not None else 0
        if self.cluster is not None:  # REGISTERs still in Redis count too
            held += self.cluster.registering.get(session.id, 0)
        if capped and held >= self.max_registrations:  # each success adds one
            lograte.refused(self.log, "info", "too_many_registrations", session.id, "session {sid} refused a "
                            "registration: it has {n} (limits.max_registrations_per_session)", sid=session.id, n=held)
            send(wamp.error(wamp.REGISTER, request, wamp.TOO_MANY_REGISTRATIONS,
                            [f"this session has {held} registrations, the most it may have"]))
            return
        reg = self._index.get(procedure, match)
        if reg is not None:
            if reg.invoke != invoke:
                send(wamp.error(wamp.REGISTER, request, wamp.PROCEDURE_EXISTS_WITH_DIFFERENT_INVOCATION_POLICY,
                                [f"{wamp.quote(procedure)} is registered with invoke {reg.invoke!r}, not {invoke!r}"]))
                return
            if invoke == "single" or any(c.session is session for c in reg.callees):
                send(wamp.error(wamp.REGISTER, request, wamp.PROCEDURE_ALREADY_EXISTS,
                                [f"procedure {wamp.quote(procedure)} is already registered"]))
                return
        if capped and self.cluster is not None:  # atomic in Redis first; answered once Redis has
            self.cluster.register(session, request, procedure, match, invoke, options)
            return
        self.add(session, request, procedure, match, invoke, options, self._new_id() if reg is None else reg.id,
                 reg is None)

    def add(self, session: Session, request: int, procedure: str, match: str, invoke: str, options: dict,
            reg_id: int, created: bool, in_cluster: bool = False) -> Registration:
        """Add the session as a callee (a REGISTER accepted: here, or by the cluster) and answer REGISTERED;
        `created`: the registration is new (on one node: here; in a cluster: cluster-wide)."""
        reg = self._index.get(procedure, match)
        if reg is None:
            reg = Registration(reg_id, procedure, match, invoke)
            reg.in_cluster = in_cluster
            self._index.add(procedure, match, reg)
            self._by_id[reg.id] = reg
        reg.callees.append(Callee(session, options))
        self._by_callee.setdefault(session.id, {})[reg.id] = reg
        session.transport.send([wamp.REGISTERED, request, reg.id])
        if self.listener is not None:
            self.listener.registered(session.id, reg, created)
        return reg

    def unregister(self, session: Session, msg: list) -> None:
        request, reg_id = msg[1], msg[2]
        reg = self._by_callee.get(session.id, {}).get(reg_id)
        if reg is None:
            session.transport.send(wamp.error(wamp.UNREGISTER, request, wamp.NO_SUCH_REGISTRATION))
            return
        self._remove(session, reg)
        session.transport.send([wamp.UNREGISTERED, request])

    def _answered(self, callee: Session, inv_id: int) -> Invocation | None:
        """The call a YIELD or ERROR answers; None when nobody waits for it any more."""
        pending = self._invocations.get(callee.id)
        return pending.get(inv_id) if pending else None

    def yield_(self, session: Session, msg: list) -> None:
        inv = self._answered(session, msg[1])
        if inv is None:
            return  # the caller left, canceled, or timed out: nobody waits for it
        options = msg[2]
        if options and options.get("progress") is True:
            if inv.progress and not inv.canceling and inv.caller.transport.send(
                    [wamp.RESULT, inv.call_id, _result_details(options, True), *msg[3:]]) is not None:
                # The caller got an ERROR in its place (WampProtocol.send): the call is over for it.
                self._forget(inv)
                if inv.callee.canceling:
                    self._interrupt(inv, "killnowait", wamp.CANCELED)
            return
        self._forget(inv)
        if inv.canceling:
            inv.caller.transport.send(wamp.error(wamp.CALL, inv.call_id, wamp.CANCELED, ["the call was canceled"]))
        else:
            inv.caller.transport.send([wamp.RESULT, inv.call_id, _result_details(options, False) if options else {},
                                       *msg[3:]])

    def error(self, session: Session, msg: list) -> None:
        if msg[1] != wamp.INVOCATION:
            raise wamp.ProtocolViolation(f"ERROR for request type {msg[1]} is not one a client may send")
        inv = self._answered(session, msg[2])
        if inv is None:
            return
        self._forget(inv)
        uri = wamp.CANCELED if inv.canceling else msg[4]
        inv.caller.transport.send([wamp.ERROR, wamp.CALL, inv.call_id, msg[3], uri, *msg[5:]], len(msg) > 5)

    # -- caller side -----------------------------------------------------------------------------
    def call(self, session: Session, msg: list) -> None:
        request, procedure = msg[1], msg[3]
        calls = self._calls.get(session.id)
        if calls is not None and request in calls:
            self._call_continues(calls[request], msg)
            return
        reg = self._exact.get(procedure)
        callee = None
        if reg is None or reg.clustered:
            if self.cluster is not None:
                routed = self.cluster.route(session, msg)
                if routed is True:
                    return  # forwarded to the callee's node, or answered
                if routed is not None:
                    reg, callee = routed
            if reg is None:
                builtin = self.builtins.get(procedure)
                if builtin is not None:
                    builtin(session, msg)
                    return
                if len(self._index) > len(self._exact) and not wamp.is_reserved(procedure):
                    reg = self._index.best(procedure)
                if reg is None:
                    if self.cluster is not None and self.cluster.unknown(session, msg):
                        return  # asked again once this node has every registration made before the CALL
                    uri = wamp.NO_SUCH_PROCEDURE if wamp.is_valid_uri(procedure) else wamp.INVALID_URI
                    session.transport.send(wamp.error(wamp.CALL, request, uri,
                                                      [f"no procedure registered for {wamp.quote(procedure)}"]))
                    return
        self.invoke(session, msg, reg, reg.pick() if callee is None else callee, calls)

    def invoke(self, session: Session, msg: list, reg: Registration, callee: Callee,
               calls: dict[int, Invocation] | None) -> None:
        """The CALL goes to this callee (picked here, or by the caller's node in a cluster): INVOCATION.
        `calls`: the caller's table of calls in flight, if it has one."""
        request, options, procedure = msg[1], msg[2], msg[3]
        callee_session = callee.session
        pending = self._invocations.get(callee_session.id)
        if pending is not None and self.max_pending_calls is not None and len(pending) >= self.max_pending_calls:
            session.transport.send(wamp.error(wamp.CALL, request, wamp.CANCELED,
                                              ["the callee has too many calls pending"]))
            return
        role = session.authorizer
        if callee.disclose_caller or (role is not None and role.allows("caller", procedure)) or (
                options and options.get("disclose_me")):
            details = {"caller": session.id, "caller_authid": session.authid, "caller_authrole": session.authrole}
        else:
            details = {}
        if reg.match != "exact":
            details["procedure"] = procedure
        inv = Invocation(callee_session.next_seq(), session, request, callee, reg)
        if options:
            try:
                self._call_options(inv, options, details)
            except CallRefused as e:
                session.transport.send(wamp.error(wamp.CALL, request, e.uri, [e.message]))
                return
        if pending is None:
            pending = self._invocations[callee_session.id] = {}
        pending[inv.id] = inv
        if calls is None:
            calls = self._calls[session.id] = {}
        calls[request] = inv
        self.calls_routed += 1  # for /metrics (set to 0 by RealmRouter)
        refused = callee_session.transport.send([wamp.INVOCATION, inv.id, reg.id, details, *msg[4:]])
        if refused is not None:
            self._undeliverable(inv, refused, interrupt=False)

    def _undeliverable(self, inv: Invocation, uri: str, interrupt: bool) -> None:
        """An INVOCATION the callee cannot be sent (too large for it, not writable in its serializer, or
        it reads too slowly): the call fails for the caller instead of queuing. `interrupt`: the callee
        has part of the call already (progressive invocations) and is told to stop, if it understands."""
        self._forget(inv)
        if interrupt and inv.callee.canceling:
            self._interrupt(inv, "killnowait", wamp.CANCELED)
        inv.caller.transport.send(wamp.error(wamp.CALL, inv.call_id, uri, ["the callee could not be sent the call"]))

    def _call_options(self, inv: Invocation, options: dict, details: dict) -> None:
        """The Advanced Profile's CALL options: receive_progress, progress, timeout, ppt_*."""
        callee = inv.callee
        if options.get("receive_progress") is True and callee.progressive_out:
            inv.progress = details["receive_progress"] = True
        if options.get("progress") is True:
            if not callee.progressive_in:
                raise CallRefused(wamp.FEATURE_NOT_SUPPORTED,
                                  "the callee does not support progressive_call_invocations")
            inv.streaming = details["progress"] = True
        timeout = options.get("timeout")
        if timeout is not None:
            if type(timeout) is not int or timeout < 0:
                raise CallRefused(wamp.INVALID_ARGUMENT, "CALL.Options.timeout must be a non-negative integer (ms)")
        ppt = {key: options[key] for key in wamp.PPT_KEYS if key in options}
        if ppt:
            if type(ppt.get("ppt_scheme")) is not str or not ppt["ppt_scheme"] or any(
                    type(v) is not str for v in ppt.values()):
                raise CallRefused(wamp.INVALID_ARGUMENT, "CALL.Options.ppt_* must be strings, ppt_scheme non-empty")
            if not inv.caller.announces("caller", "payload_passthru_mode"):
                raise wamp.ProtocolViolation("CALL with ppt_scheme from a caller that did not announce "
                                             "payload_passthru_mode")
            if not callee.passthru:
                raise CallRefused(wamp.FEATURE_NOT_SUPPORTED, "the callee does not support payload_passthru_mode")
            details.update(ppt)
        if timeout:  # last: nothing after this may refuse the call and leave the timer behind
            inv.timer = self.clock.callLater(timeout / 1000.0, self._timed_out, inv)

    def _call_continues(self, inv: Invocation, msg: list) -> None:
        """A further CALL with the request id of a call in flight: the next chunk of a progressive
        call invocation, sent on to the same callee under the same invocation id."""
        if not inv.streaming:
            raise wamp.ProtocolViolation(f"CALL request id {inv.call_id} is already in flight")
        if type(inv) is RemoteCall:
            inv.streaming = msg[2].get("progress") is True
            self.cluster.forward(inv, msg)
            return
        inv.streaming = msg[2].get("progress") is True
        details = {"progress": True} if inv.streaming else {}
        refused = inv.callee.session.transport.send([wamp.INVOCATION, inv.id, inv.registration.id, details, *msg[4:]])
        if refused is not None:
            self._undeliverable(inv, refused, interrupt=True)

    def cancel(self, session: Session, msg: list) -> None:
        """CANCEL (call_canceling). Unknown or finished calls: nothing happens. A callee that does not
        understand INTERRUPT gets none, and its late answer is dropped (mode `skip`)."""
        request, options = msg[1], msg[2]
        mode = options.get("mode", DEFAULT_CANCEL_MODE)
        if type(mode) is not str or mode not in CANCEL_MODES:
            raise wamp.ProtocolViolation(
                f"CANCEL.Options.mode must be one of {sorted(CANCEL_MODES)}, not {wamp.quote(mode)}")
        calls = self._calls.get(session.id)
        inv = calls.get(request) if calls else None
        if inv is None or inv.canceling:
            return
        if type(inv) is RemoteCall:
            self.cluster.cancel(inv, msg)
            return
        if not inv.callee.canceling:
            mode = "skip"
        if mode == "kill":
            inv.canceling = True
            self._interrupt(inv, "kill", wamp.CANCELED)
            return
        self._forget(inv)
        if mode == "killnowait":
            self._interrupt(inv, "killnowait", wamp.CANCELED)
        session.transport.send(wamp.error(wamp.CALL, request, wamp.CANCELED, [f"the call was canceled ({mode})"]))

    def _timed_out(self, inv: Invocation) -> None:
        """call_timeout: the dealer gives up on the call; the caller hears wamp.error.timeout."""
        inv.timer = None
        self._forget(inv)
        if inv.callee.canceling:
            self._interrupt(inv, "killnowait", wamp.TIMEOUT)
        inv.caller.transport.send(wamp.error(wamp.CALL, inv.call_id, wamp.TIMEOUT,
                                             ["the call timed out (CALL.Options.timeout)"]))

    @staticmethod
    def _interrupt(inv: Invocation, mode: str, reason: str) -> None:
        inv.callee.session.transport.send([wamp.INTERRUPT, inv.id, {"mode": mode, "reason": reason}])

    def _forget(self, inv: Invocation) -> None:
        """Take a call out of both tables (a later YIELD or ERROR for it is ignored)."""
        if inv.timer is not None:
            if inv.timer.active():
                inv.timer.cancel()
            inv.timer = None
        callee_id = inv.callee.session.id
        pending = self._invocations.get(callee_id)
        if pending is not None and pending.pop(inv.id, None) is not None and not pending:
            del self._invocations[callee_id]
        calls = self._calls.get(inv.caller.id)
        if calls is not None and calls.pop(inv.call_id, None) is not None and not calls:
            del self._calls[inv.caller.id]

    def forget_remote(self, call: RemoteCall) -> bool:
        """Take a forwarded call out of its caller's table; False if it was not there (answered already)."""
        calls = self._calls.get(call.caller.id)
        if calls is None or calls.get(call.call_id) is not call:
            return False
        del calls[call.call_id]
        if not calls:
            del self._calls[call.caller.id]
        return True

    def remote_calls(self) -> list[RemoteCall]:
        """Every call forwarded from here to another node and not answered yet."""
        return [c for calls in self._calls.values() for c in calls.values() if type(c) is RemoteCall]

    # -- session lifetime ------------------------------------------------------------------------
    def detach(self, session: Session) -> None:
        """Drop a leaving session's registrations; callers waiting on it get an ERROR at once, and
        its own calls in flight are forgotten (callees that understand INTERRUPT are told)."""
        for reg in list(self._by_callee.get(session.id, {}).values()):
            self._remove(session, reg)
        for inv in list(self._invocations.get(session.id, {}).values()):
            self._forget(inv)
            inv.caller.transport.send(wamp.error(wamp.CALL, inv.call_id, wamp.CANCELED,
                                                 ["the callee left before answering"]))
        for inv in list(self._calls.get(session.id, {}).values()):
            if type(inv) is RemoteCall:
                self.forget_remote(inv)
                self.cluster.caller_left(inv)
                continue
            self._forget(inv)
            if inv.callee.canceling:
                self._interrupt(inv, "killnowait", wamp.CANCELED)

    def _remove(self, session: Session, reg: Registration) -> None:
        reg.callees = [c for c in reg.callees if c.session is not session]
        deleted = not reg.callees
        if deleted:
            self._index.remove(reg.procedure, reg.match)
            del self._by_id[reg.id]
        mine = self._by_callee[session.id]
        del mine[reg.id]
        if not mine:
            del self._by_callee[session.id]
        if reg.in_cluster and self.cluster is not None:
            self.cluster.unregistered(session, reg)  # tells the listener once Redis has (deleted cluster-wide?)
        elif self.listener is not None:
            self.listener.unregistered(session.id, reg, deleted)

    def _new_id(self) -> int:
        while True:
            reg_id = wamp.global_id()
            if reg_id not in self._by_id:
                return reg_id

    # -- introspection (meta API, tests) ---------------------------------------------------------
    def registrations(self) -> list[Registration]:
        return list(self._by_id.values())

    def registration(self, reg_id: int) -> Registration | None:
        return self._by_id.get(reg_id)

    def lookup(self, procedure: str, match: str = "exact") -> Registration | None:
        return self._index.get(procedure, match)

    def match(self, procedure: str) -> Registration | None:
        """The registration a CALL to `procedure` would go to."""
        return self._index.best(procedure)

    def size(self) -> int:
        return len(self._by_id)

    def pending(self) -> int:
        return sum(len(p) for p in self._invocations.values())


def _result_details(options: dict, progress: bool) -> dict:
    details = {"progress": True} if progress else {}
    if "ppt_scheme" in options:
        for key in wamp.PPT_KEYS:
            if key in options:
                details[key] = options[key]
    return details
