"""The dealer of one realm: REGISTER / UNREGISTER / CALL → INVOCATION → YIELD|ERROR → RESULT|ERROR."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from twisted.logger import Logger

from router import wamp
from router.session import Session


class Registration:
    __slots__ = ("id", "procedure", "match", "callee", "options", "created", "disclose_caller")

    def __init__(self, id: int, procedure: str, match: str, callee: Session, options: dict) -> None:
        self.id = id
        self.procedure = procedure
        self.match = match
        self.callee = callee
        self.options = options
        self.created = time.time()
        self.disclose_caller = options.get("disclose_caller") is True  # the callee wants to know who calls


class Invocation:
    """A call in flight: the caller's request id and the callee's invocation id for it."""

    __slots__ = ("id", "caller", "call_id", "callee", "registration")

    def __init__(self, id: int, caller: Session, call_id: int, callee: Session, registration: Registration):
        self.id = id
        self.caller = caller
        self.call_id = call_id
        self.callee = callee
        self.registration = registration


class RegistrationListener(Protocol):
    def registered(self, session_id: int, reg: Registration) -> None: ...

    def unregistered(self, session_id: int, reg: Registration) -> None: ...


# A procedure the router provides itself (the meta API): answers the CALL at once with RESULT or ERROR.
BuiltIn = Callable[[Session, list], None]


class Dealer:
    FEATURES: dict[str, bool] = {"caller_identification": True}

    log = Logger()

    def __init__(self, realm_uri: str, max_pending_calls: int | None = None) -> None:
        self.realm_uri = realm_uri
        self.max_pending_calls = max_pending_calls  # per callee
        self._by_procedure: dict[str, Registration] = {}
        self._by_id: dict[int, Registration] = {}
        self._by_callee: dict[int, dict[int, Registration]] = {}
        self._invocations: dict[int, dict[int, Invocation]] = {}  # callee id → invocation id → call
        self._calls: dict[int, dict[int, Invocation]] = {}  # caller id → call request id → call
        # Told of registration changes (the meta API's on_create/on_register/...); None: nobody asks.
        self.listener: RegistrationListener | None = None
        # Router-provided procedures under the reserved `wamp.` namespace, which no client can
        # register. Consulted only when no registration matches, so an ordinary CALL pays nothing.
        self.builtins: dict[str, BuiltIn] = {}

    # -- callee side -----------------------------------------------------------------------------
    def register(self, session: Session, msg: list) -> None:
        request, options, procedure = msg[1], msg[2], msg[3]
        send = session.transport.send
        match = options.get("match", "exact")
        if match != "exact":
            send(wamp.error(wamp.REGISTER, request, wamp.INVALID_ARGUMENT,
                            [f"match policy {match!r} is not supported"]))
            return
        if not wamp.is_valid_uri(procedure) or wamp.is_reserved(procedure):
            send(wamp.error(wamp.REGISTER, request, wamp.INVALID_URI,
                            [f"invalid or reserved procedure URI {procedure!r}"]))
            return
        if procedure in self._by_procedure:
            send(wamp.error(wamp.REGISTER, request, wamp.PROCEDURE_ALREADY_EXISTS,
                            [f"procedure {procedure!r} is already registered"]))
            return
        reg = Registration(self._new_id(), procedure, match, session, options)
        self._by_procedure[procedure] = reg
        self._by_id[reg.id] = reg
        self._by_callee.setdefault(session.id, {})[reg.id] = reg
        send([wamp.REGISTERED, request, reg.id])
        if self.listener is not None:
            self.listener.registered(session.id, reg)

    def unregister(self, session: Session, msg: list) -> None:
        request, reg_id = msg[1], msg[2]
        reg = self._by_id.get(reg_id)
        if reg is None or reg.callee is not session:
            session.transport.send(wamp.error(wamp.UNREGISTER, request, wamp.NO_SUCH_REGISTRATION))
            return
        self._remove(reg)
        session.transport.send([wamp.UNREGISTERED, request])

    def yield_(self, session: Session, msg: list) -> None:
        inv = self._pop_invocation(session, msg[1])
        if inv is not None:
            inv.caller.transport.send([wamp.RESULT, inv.call_id, {}, *msg[3:]])

    def error(self, session: Session, msg: list) -> None:
        if msg[1] != wamp.INVOCATION:
            raise wamp.ProtocolViolation(f"ERROR for request type {msg[1]} is not one a client may send")
        inv = self._pop_invocation(session, msg[2])
        if inv is not None:
            inv.caller.transport.send([wamp.ERROR, wamp.CALL, inv.call_id, msg[3], *msg[4:]])

    def _pop_invocation(self, callee: Session, inv_id: int) -> Invocation | None:
        """The call a YIELD or ERROR answers; None (ignored) when the caller left or it is unknown."""
        pending = self._invocations.get(callee.id)
        inv = pending.pop(inv_id, None) if pending else None
        if inv is None:
            return None
        if not pending:
            del self._invocations[callee.id]
        calls = self._calls[inv.caller.id]
        del calls[inv.call_id]
        if not calls:
            del self._calls[inv.caller.id]
        return inv

    # -- caller side -----------------------------------------------------------------------------
    def call(self, session: Session, msg: list) -> None:
        request, procedure = msg[1], msg[3]
        reg = self._by_procedure.get(procedure)
        if reg is None:
            builtin = self.builtins.get(procedure)
            if builtin is not None:
                builtin(session, msg)
                return
            uri = wamp.NO_SUCH_PROCEDURE if wamp.is_valid_uri(procedure) else wamp.INVALID_URI
            session.transport.send(wamp.error(wamp.CALL, request, uri,
                                              [f"no procedure registered for {procedure!r}"]))
            return
        callee = reg.callee
        pending = self._invocations.get(callee.id)
        if pending is None:
            pending = self._invocations[callee.id] = {}
        elif self.max_pending_calls is not None and len(pending) >= self.max_pending_calls:
            session.transport.send(wamp.error(wamp.CALL, request, wamp.CANCELED,
                                              ["the callee has too many calls pending"]))
            return
        calls = self._calls.get(session.id)
        if calls is None:
            calls = self._calls[session.id] = {}
        elif request in calls:
            raise wamp.ProtocolViolation(f"CALL request id {request} is already in flight")
        inv = Invocation(callee.next_seq(), session, request, callee, reg)
        pending[inv.id] = inv
        calls[request] = inv
        role = session.authorizer
        if reg.disclose_caller or msg[2].get("disclose_me") or (role is not None and role.allows("caller", procedure)):
            details = {"caller": session.id, "caller_authid": session.authid, "caller_authrole": session.authrole}
        else:
            details = {}
        callee.transport.send([wamp.INVOCATION, inv.id, reg.id, details, *msg[4:]])

    # -- session lifetime ------------------------------------------------------------------------
    def detach(self, session: Session) -> None:
        """Drop a leaving session's registrations; callers waiting on it get an ERROR at once, and
        its own calls in flight are forgotten (a late YIELD for them is ignored)."""
        for reg in list(self._by_callee.get(session.id, {}).values()):
            self._remove(reg)
        for inv in self._invocations.pop(session.id, {}).values():
            calls = self._calls.get(inv.caller.id)
            if calls is not None:
                calls.pop(inv.call_id, None)
                if not calls:
                    del self._calls[inv.caller.id]
            inv.caller.transport.send(wamp.error(wamp.CALL, inv.call_id, wamp.CANCELED,
                                                 ["the callee left before answering"]))
        for inv in self._calls.pop(session.id, {}).values():
            pending = self._invocations.get(inv.callee.id)
            if pending is not None:
                pending.pop(inv.id, None)
                if not pending:
                    del self._invocations[inv.callee.id]

    def _remove(self, reg: Registration) -> None:
        del self._by_procedure[reg.procedure]
        del self._by_id[reg.id]
        mine = self._by_callee[reg.callee.id]
        del mine[reg.id]
        if not mine:
            del self._by_callee[reg.callee.id]
        if self.listener is not None:
            self.listener.unregistered(reg.callee.id, reg)

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

    def lookup(self, procedure: str) -> Registration | None:
        return self._by_procedure.get(procedure)

    def size(self) -> int:
        return len(self._by_id)

    def pending(self) -> int:
        return sum(len(p) for p in self._invocations.values())
