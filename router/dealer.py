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

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from router import lograte, wamp
from router.backend import DealerBackend, RemoteCallee
from router.backend.local import LocalDealer
from router.matching import MATCH_POLICIES, PatternIndex
from router.session import Session

INVOKE_POLICIES = frozenset({"single", "roundrobin", "random", "first", "last"})
CANCEL_MODES = frozenset({"skip", "kill", "killnowait"})
DEFAULT_CANCEL_MODE = "killnowait"  # the caller hears at once, the callee is told to stop
MAX_REGISTRATIONS = 10_000  # per session (limits.max_registrations_per_session)


class Callee:
    """One session's part in a registration (several under a shared registration)."""

    __slots__ = ("session", "session_id", "disclose_caller", "canceling", "progressive_in", "progressive_out",
                 "passthru")
    remote = False  # a RemoteCallee (router/backend) lives on another node

    def __init__(self, session: Session, options: dict) -> None:
        self.session = session
        self.session_id = session.id
        self.disclose_caller = options.get("disclose_caller") is True  # the callee wants to know who calls
        self.canceling = session.announces("callee", "call_canceling")  # understands INTERRUPT
        self.progressive_out = session.announces("callee", "progressive_call_results")
        self.progressive_in = session.announces("callee", "progressive_call_invocations")
        self.passthru = session.announces("callee", "payload_passthru_mode")


class Registration:
    """One registration of the whole router: its callees on this node (`Callee`) and, in a cluster, on
    the others (`RemoteCallee`), in router-wide registration order, so that precedence and the shared
    registration policies are decided once, over every callee."""

    __slots__ = ("id", "procedure", "match", "invoke", "callees", "local", "created", "_turn", "own")

    def __init__(self, id: int, procedure: str, match: str, invoke: str, own: bool = False) -> None:
        self.id = id
        self.procedure = procedure
        self.match = match
        self.invoke = invoke
        self.callees: list[Callee | RemoteCallee] = []  # in the order they registered, router-wide
        self.local: dict[int, Callee] = {}  # this node's routable callees, by session id
        self.created = time.time()
        self._turn = 0
        self.own = own  # the router's own procedure (admin realm): served on every node, never shared

    @property
    def callee(self) -> Session | None:
        """The first of this node's callees (the only one under `single`); None if all are elsewhere."""
        first = next(iter(self.local.values()), None)
        return first.session if first is not None else None

    def pick(self) -> Callee | RemoteCallee:
        """The callee the next call goes to, by the registration's invocation policy: `first` and `last`
        by router-wide registration order, `random` uniform over all callees, `roundrobin` turns over
        the same order (each node keeps its own turn, so every node's callers are spread fairly)."""
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
    """A CALL forwarded to the callee's node (the backend's `forward`), kept in the caller's table of
    calls in flight so that further progressive CALLs and CANCEL follow it there."""

    __slots__ = ("node", "caller", "call_id", "streaming")
    canceling = False

    def __init__(self, node: str, caller: Session, call_id: int, streaming: bool) -> None:
        self.node = node
        self.caller = caller
        self.call_id = call_id
        self.streaming = streaming  # the caller is still sending progressive CALLs


InFlight = Invocation | RemoteCall  # what a caller's table of calls in flight holds


class RegistrationListener(Protocol):
    def registered(self, session_id: int, reg: Registration, created: bool) -> None: ...

    def unregistered(self, session_id: int, reg: Registration, deleted: bool) -> None: ...


# A procedure the router provides itself (the meta API): answers the CALL at once with RESULT or ERROR.
BuiltIn = Callable[[Session, list], None]


class CallRefused(wamp.WampError):
    """A CALL option the dealer cannot honour: the caller gets this ERROR and nothing is invoked."""


class Dealer:
    FEATURES: dict[str, bool] = {
        "caller_identification": True, "pattern_based_registration": True, "shared_registration": True,
        "progressive_call_results": True, "progressive_call_invocations": True, "call_canceling": True,
        "call_timeout": True, "payload_passthru_mode": True,
    }

    log = Logger()

    def __init__(self, realm_uri: str, max_pending_calls: int | None = None, clock=None,
                 max_registrations: int = MAX_REGISTRATIONS, backend: DealerBackend | None = None) -> None:
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
        self._calls: dict[int, dict[int, InFlight]] = {}  # caller id → call request id → call
        # Told of registration changes (the meta API's on_create/on_register/...); None: nobody asks.
        self.listener: RegistrationListener | None = None
        # Router-provided procedures under the reserved `wamp.` namespace, which no client can
        # register. Consulted only when no exact registration matches, so an ordinary CALL pays nothing.
        self.builtins: dict[str, BuiltIn] = {}
        # Where registrations are agreed and remote callees are reached (router/backend).
        self.backend: DealerBackend = backend if backend is not None else LocalDealer()
        self._registering: dict[int, int] = {}  # session id → its REGISTERs the backend has not agreed yet

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
        held = (len(mine) if mine is not None else 0) + self._registering.get(session.id, 0)  # agreed or not yet
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
            if invoke == "single" or session.id in reg.local:
                send(wamp.error(wamp.REGISTER, request, wamp.PROCEDURE_ALREADY_EXISTS,
                                [f"procedure {wamp.quote(procedure)} is already registered"]))
                return
        callee = Callee(session, options)
        reg_id = reg.id if reg is not None else self._new_id()
        if not capped:  # the router's own procedure: every node serves it with its own callee
            self._add(callee, request, procedure, match, invoke, reg_id, reg is None, own=True)
            return
        self._registering[session.id] = self._registering.get(session.id, 0) + 1
        self.backend.register(session, procedure, match, invoke, reg_id, reg is None).addCallbacks(
            lambda agreed: self._agreed(callee, request, procedure, match, invoke, *agreed),
            lambda f: self._not_agreed(session, request, procedure, f)).addErrback(
            lambda f: self.log.failure("completing a REGISTER failed", failure=f))

    def _done_registering(self, session: Session) -> bool:
        """One REGISTER of the session is answered; False if the session left meanwhile."""
        n = self._registering.get(session.id)
        if n is None:
            return False
        if n > 1:
            self._registering[session.id] = n - 1
        else:
            del self._registering[session.id]
        return True

    def _agreed(self, callee: Callee, request: int, procedure: str, match: str, invoke: str, reg_id: int,
                created: bool) -> None:
        session = callee.session
        if not self._done_registering(session):  # it left: the backend forgets it again
            self.backend.unregister(session, procedure, match, False).addErrback(lambda f: None)
            return
        self._add(callee, request, procedure, match, invoke, reg_id, created)
        self.backend.registered(session, procedure, match)

    def _not_agreed(self, session: Session, request: int, procedure: str, f: Failure) -> None:
        if not self._done_registering(session):
            return
        e = f.value
        if not isinstance(e, wamp.WampError):
            self.log.warn("registering {procedure} failed: {e}", procedure=wamp.quote(procedure),
                          e=f.getErrorMessage())
            e = wamp.WampError(wamp.CANCELED, "the registration could not be agreed")
        session.transport.send(wamp.error(wamp.REGISTER, request, e.uri, [e.message]))

    def _add(self, callee: Callee, request: int, procedure: str, match: str, invoke: str, reg_id: int,
             created: bool, own: bool = False) -> Registration:
        """The session is a routable callee now: REGISTERED, and the meta events."""
        session = callee.session
        reg = self._index.get(procedure, match)
        if reg is None:
            reg = Registration(reg_id, procedure, match, invoke, own)
            self._index.add(procedure, match, reg)
            self._by_id[reg.id] = reg
        reg.local[session.id] = callee
        reg.callees.append(callee)
        self._by_callee.setdefault(session.id, {})[reg.id] = reg
        session.transport.send([wamp.REGISTERED, request, reg.id])
        if self.listener is not None:
            self.listener.registered(session.id, reg, created)
        return reg

    def apply_shared(self, procedure: str, match: str, reg_id: int, invoke: str, created: float,
                     callees: list[tuple[str | None, int]]) -> None:
        """The backend's router-wide record of a registration changed: its callees in registration order,
        as (node, session id), node None for this node's. This node's callees are routable only once
        REGISTERED was sent (`reg.local`); those the record does not list yet keep their place last."""
        reg = self._index.get(procedure, match)
        if reg is None:
            if all(node is None for node, _ in callees):
                return  # only this node's callees: they are added as their REGISTERs complete
            reg = Registration(reg_id, procedure, match, invoke)
            reg.created = created
            self._index.add(procedure, match, reg)
            self._by_id[reg.id] = reg
        elif reg.own:
            return
        order: list[Callee | RemoteCallee] = []
        listed = set()
        for node, sid in callees:
            if node is None:
                callee = reg.local.get(sid)
                if callee is not None:
                    order.append(callee)
                    listed.add(sid)
            else:
                order.append(RemoteCallee(node, sid))
        order.extend(c for sid, c in reg.local.items() if sid not in listed)
        reg.callees = order
        if not order:
            self._drop(reg)

    def _drop(self, reg: Registration) -> None:
        if self._index.get(reg.procedure, reg.match) is reg:
            self._index.remove(reg.procedure, reg.match)
            del self._by_id[reg.id]

    def unregister(self, session: Session, msg: list) -> None:
        request, reg_id = msg[1], msg[2]
        reg = self._by_callee.get(session.id, {}).get(reg_id)
        if reg is None:
            session.transport.send(wamp.error(wamp.UNREGISTER, request, wamp.NO_SUCH_REGISTRATION))
            return
        # UNREGISTERED once every other node has applied it, as REGISTERED waits for them too.
        self._remove(session, reg).addBoth(lambda _: session.transport.send([wamp.UNREGISTERED, request]))

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
        if reg is None:
            builtin = self.builtins.get(procedure)
            if builtin is not None:
                builtin(session, msg)
                return
            if len(self._index) > len(self._exact) and not wamp.is_reserved(procedure):
                reg = self._index.best(procedure)
            if reg is None:
                if self.backend.catch_up(session, msg, lambda: self._call_again(session, msg)):
                    return  # asked again once this node has every registration made before the CALL
                uri = wamp.NO_SUCH_PROCEDURE if wamp.is_valid_uri(procedure) else wamp.INVALID_URI
                session.transport.send(wamp.error(wamp.CALL, request, uri,
                                                  [f"no procedure registered for {wamp.quote(procedure)}"]))
                return
        callee = reg.pick()
        if isinstance(callee, RemoteCallee):  # on another node: the backend forwards it, the caller's table keeps it
            options = msg[2]
            if options:  # what only the caller decides is refused here, as for a local callee
                try:
                    _caller_options(session, options)
                except CallRefused as e:
                    session.transport.send(wamp.error(wamp.CALL, request, e.uri, [e.message]))
                    return
            if calls is None:
                calls = self._calls[session.id] = {}
            call = calls[request] = RemoteCall(callee.node, session, request,
                                               bool(options) and options.get("progress") is True)
            self.backend.forward(call, msg, reg.procedure, reg.match, callee)
            return
        self.invoke(session, msg, reg, callee, calls)

    def _call_again(self, session: Session, msg: list) -> None:
        """A CALL that missed, routed again now that this node has caught up with the router."""
        calls = self._calls.get(session.id)
        if calls is not None and msg[1] in calls:
            return  # the caller reused the request id meanwhile: the later CALL wins
        try:
            self.call(session, msg)
        except wamp.ProtocolViolation as e:
            session.transport.abort(wamp.PROTOCOL_VIOLATION, str(e))

    def invoke(self, session: Session, msg: list, reg: Registration, callee: Callee,
               calls: dict[int, InFlight] | None) -> None:
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
        timeout, ppt = _caller_options(inv.caller, options)
        if options.get("receive_progress") is True and callee.progressive_out:
            inv.progress = details["receive_progress"] = True
        if options.get("progress") is True:
            if not callee.progressive_in:
                raise CallRefused(wamp.FEATURE_NOT_SUPPORTED,
                                  "the callee does not support progressive_call_invocations")
            inv.streaming = details["progress"] = True
        if ppt:
            if not callee.passthru:
                raise CallRefused(wamp.FEATURE_NOT_SUPPORTED, "the callee does not support payload_passthru_mode")
            details.update(ppt)
        if timeout:  # last: nothing after this may refuse the call and leave the timer behind
            inv.timer = self.clock.callLater(timeout / 1000.0, self._timed_out, inv)

    def _call_continues(self, inv: InFlight, msg: list) -> None:
        """A further CALL with the request id of a call in flight: the next chunk of a progressive
        call invocation, sent on to the same callee under the same invocation id."""
        if not inv.streaming:
            raise wamp.ProtocolViolation(f"CALL request id {inv.call_id} is already in flight")
        if isinstance(inv, RemoteCall):
            inv.streaming = msg[2].get("progress") is True
            self.backend.forward_more(inv, msg)
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
        if isinstance(inv, RemoteCall):
            self.backend.cancel(inv, msg)
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

    def drop(self, inv: Invocation) -> None:
        """End a call in flight that its caller gave up on: forgotten, and the callee told if it understands."""
        self._forget(inv)
        if inv.callee.canceling:
            self._interrupt(inv, "killnowait", wamp.CANCELED)

    def calls_of(self, session_id: int) -> dict[int, InFlight]:
        """The session's calls in flight as a caller, by request id (read only)."""
        return self._calls.get(session_id) or {}

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
        self._registering.pop(session.id, None)  # REGISTERs still being agreed are undone as they complete
        for reg in list(self._by_callee.get(session.id, {}).values()):
            self._remove(session, reg).addErrback(lambda f: None)
        for inv in list(self._invocations.get(session.id, {}).values()):
            self._forget(inv)
            inv.caller.transport.send(wamp.error(wamp.CALL, inv.call_id, wamp.CANCELED,
                                                 ["the callee left before answering"]))
        for call in list(self._calls.get(session.id, {}).values()):
            if isinstance(call, RemoteCall):
                self.forget_remote(call)
                self.backend.caller_left(call)
            else:
                self.drop(call)

    def _remove(self, session: Session, reg: Registration) -> defer.Deferred:
        """The session is no callee of `reg` any more: no call goes to it from now on. Fires once every
        other node has applied it, after the meta events (on_delete once the whole router has none)."""
        callee = reg.local.pop(session.id)
        reg.callees = [c for c in reg.callees if c is not callee]
        if not reg.callees:
            self._drop(reg)
        mine = self._by_callee[session.id]
        del mine[reg.id]
        if not mine:
            del self._by_callee[session.id]
        if reg.own:
            told = defer.succeed(not reg.callees)
        else:
            told = self.backend.unregister(session, reg.procedure, reg.match, not reg.callees)
        listener = self.listener
        if listener is not None:
            told.addCallback(lambda deleted: listener.unregistered(session.id, reg, deleted))
        return told

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


def _caller_options(caller: Session, options: dict) -> tuple[int | None, dict]:
    """The CALL options that depend on the caller alone: (timeout, ppt_* options). CallRefused for a bad
    value; ProtocolViolation for passthru from a caller that did not announce payload_passthru_mode."""
    timeout = options.get("timeout")
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise CallRefused(wamp.INVALID_ARGUMENT, "CALL.Options.timeout must be a non-negative integer (ms)")
    ppt = {key: options[key] for key in wamp.PPT_KEYS if key in options}
    if ppt:
        if type(ppt.get("ppt_scheme")) is not str or not ppt["ppt_scheme"] or any(
                type(v) is not str for v in ppt.values()):
            raise CallRefused(wamp.INVALID_ARGUMENT, "CALL.Options.ppt_* must be strings, ppt_scheme non-empty")
        if not caller.announces("caller", "payload_passthru_mode"):
            raise wamp.ProtocolViolation("CALL with ppt_scheme from a caller that did not announce "
                                         "payload_passthru_mode")
    return timeout, ppt


def _result_details(options: dict, progress: bool) -> dict:
    details = {"progress": True} if progress else {}
    if "ppt_scheme" in options:
        for key in wamp.PPT_KEYS:
            if key in options:
                details[key] = options[key]
    return details
