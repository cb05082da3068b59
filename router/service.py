"""An in-router callee: registers procedures in a realm's dealer and answers their INVOCATIONs by
calling Python functions, so router-provided procedures (the admin realm's) are routed exactly like
a client's, with no special case on the CALL path. It has no connection, so it is not in the session
table; the dealer talks to it through the same `send` as to any callee's transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from router import wamp
from router.routing import RealmRouter
from router.session import ESTABLISHED, Session

# handler(details, args, kwargs) -> result. A wamp.WampError is answered as ERROR with its URI, args
# and kwargs; anything else is a bug, logged, answered wamp.error.runtime_error.
Handler = Callable[[dict, list, dict], Any]
RUNTIME_ERROR = "wamp.error.runtime_error"


class CallFailed(wamp.WampError):
    """A CALL made by an in-router session got ERROR `uri`."""

    def __str__(self) -> str:
        return f"{self.uri}: {self.message}"


class ServiceSession:
    log = Logger()
    state = ESTABLISHED
    codec = None

    def __init__(self, realm: RealmRouter, authid: str = "courtyard", authrole: str = "trusted") -> None:
        self.realm = realm
        self.session = Session(wamp.global_id(), realm.uri, self, peer=None, agent=wamp.ROUTER_AGENT,
                               roles={"callee": {}}, authid=authid, authrole=authrole, authmethod="trusted",
                               authprovider="courtyard", realm=realm)
        self._handlers: dict[int, Handler] = {}  # registration id → handler
        self._registering: dict[int, tuple[str, Handler]] = {}
        self._calls: dict[int, defer.Deferred] = {}  # its own CALLs in flight (session processes')

    def register(self, procedure: str, handler: Handler) -> None:
        """Register with the caller disclosed, so handlers can say who asked."""
        request = self.session.next_seq()
        self._registering[request] = (procedure, handler)
        self.realm.dealer.register(self.session, [wamp.REGISTER, request, {"disclose_caller": True}, procedure],
                                   capped=False)

    # -- calling and publishing as the router (session processes) --------------------------------
    def call(self, procedure: str, args: list | None = None, kwargs: dict | None = None,
             timeout: float | None = None) -> defer.Deferred:
        """CALL a procedure of the realm, routed like a client's. Deferred: the RESULT's one positional
        argument (None without any; `{"args", "kwargs"}` for more), or CallFailed with the ERROR's URI."""
        request = self.session.next_seq()
        d = self._calls[request] = defer.Deferred()
        msg = [wamp.CALL, request, {"timeout": max(1, int(timeout * 1000))} if timeout else {}, procedure]
        if args or kwargs:
            msg.append(list(args or []))
        if kwargs:
            msg.append(kwargs)
        self.realm.dealer.call(self.session, msg)
        return d

    def publish(self, topic: str, args: list | None = None, kwargs: dict | None = None) -> None:
        """PUBLISH to the realm (unacknowledged: a bad topic is dropped, as for a client)."""
        msg = [wamp.PUBLISH, self.session.next_seq(), {}, topic]
        if args or kwargs:
            msg.append(list(args or []))
        if kwargs:
            msg.append(kwargs)
        self.realm.broker.publish(self.session, msg)

    def _answered(self, msg: list) -> None:
        if msg[0] == wamp.RESULT:
            d = self._calls.pop(msg[1], None)
            if d is None or (msg[2] or {}).get("progress"):
                return
            args, kwargs = (msg[3] if len(msg) > 3 else []), (msg[4] if len(msg) > 4 else {})
            d.callback(None if not args and not kwargs else args[0] if len(args) == 1 and not kwargs
                       else {"args": args, "kwargs": kwargs})
        else:
            d = self._calls.pop(msg[2], None)
            if d is not None:
                d.errback(CallFailed(msg[4], msg[5][0] if len(msg) > 5 and msg[5] else msg[4]))

    # -- what the dealer sends us ----------------------------------------------------------------
    def send(self, msg: list, bulk: bool = False) -> None:
        code = msg[0]
        if code == wamp.INVOCATION:
            self._invoke(msg)
        elif code == wamp.RESULT or (code == wamp.ERROR and msg[1] == wamp.CALL):
            self._answered(msg)
        elif code == wamp.REGISTERED:
            self._handlers[msg[2]] = self._registering.pop(msg[1])[1]
        elif code == wamp.ERROR and msg[1] == wamp.REGISTER:
            procedure, _ = self._registering.pop(msg[2])
            raise RuntimeError(f"service procedure {procedure} could not be registered: {msg[4]}")

    def _invoke(self, msg: list) -> None:
        inv_id, reg_id, details = msg[1], msg[2], msg[3]
        args = msg[4] if len(msg) > 4 else []
        kwargs = msg[5] if len(msg) > 5 else {}
        try:
            result = self._handlers[reg_id](details, args, kwargs)
        except Exception as e:
            self._fail(inv_id, e)
            return
        if isinstance(result, defer.Deferred):  # answered later (a cluster-wide read from Redis)
            result.addCallbacks(lambda r: self._answer(inv_id, r), lambda f: self._fail(inv_id, f.value))
        else:
            self._answer(inv_id, result)

    def _answer(self, inv_id: int, result: Any) -> None:
        answer = [wamp.YIELD, inv_id, {}] if result is None else [wamp.YIELD, inv_id, {}, [result]]
        self.realm.dealer.yield_(self.session, answer)

    def _fail(self, inv_id: int, e: BaseException) -> None:
        if isinstance(e, wamp.WampError):
            msg = [wamp.ERROR, wamp.INVOCATION, inv_id, {}, e.uri, e.wamp_args]
            if e.wamp_kwargs:
                msg.append(e.wamp_kwargs)
        else:
            self.log.failure("service procedure failed", failure=Failure(e))
            msg = [wamp.ERROR, wamp.INVOCATION, inv_id, {}, RUNTIME_ERROR, ["the procedure failed; see the router log"]]
        self.realm.dealer.error(self.session, msg)

    def send_prepared(self, frame: Any) -> None:
        """Service sessions subscribe to nothing."""

    def close(self, reason: str = wamp.CLOSE_NORMAL, message: str | None = None) -> None:
        """A service session is never killed: it lives as long as the node."""
