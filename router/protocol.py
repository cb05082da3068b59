"""The WAMP session state machine of one connection, independent of the transport (after Bondy's
`bondy_wamp_protocol`): decode, validate, establish (HELLO → WELCOME), route, close.

A transport creates one WampProtocol per connection and feeds it whole messages; the protocol writes
back through the transport's `send_payload` / `send_prepared` / `close_transport`.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import reactor
from twisted.logger import Logger

from router import __version__, wamp
from router.serializers import SerializationError, Serializer
from router.session import QuotaWindow, RateWindow, Session
from router.tuplespace import TableFull

if TYPE_CHECKING:
    from router.node import Node

ROUTER_AGENT = f"Courtyard-{__version__}"
CLIENT_ROLES = frozenset({"caller", "callee", "publisher", "subscriber"})
# Requests counted against a session's rate and quota windows (answers such as YIELD are not).
REQUESTS = frozenset({wamp.PUBLISH, wamp.SUBSCRIBE, wamp.UNSUBSCRIBE, wamp.CALL, wamp.REGISTER,
                      wamp.UNREGISTER})

ESTABLISHING, ESTABLISHED, CLOSING, CLOSED = range(4)


class Codec(Protocol):
    """One per (transport listener, serializer): encodes a message and frames it for the wire once,
    so that an EVENT fanned out to many peers of the same kind is serialized once."""

    serializer: Serializer

    def prepare(self, msg: list) -> Any: ...


class Wire(Protocol):
    """What the protocol needs from its transport."""

    def send_payload(self, payload: bytes) -> None: ...

    def send_prepared(self, frame: Any) -> bool:
        """Send a prepared frame; False when it was dropped because the peer reads too slowly."""

    def close_transport(self, reason: str) -> None: ...


class WampProtocol:
    log = Logger()

    def __init__(self, node: Node, wire: Wire, codec: Codec, peer: tuple[str, int] | None,
                 hello_timeout: float = 0.0) -> None:
        self.node = node
        self.wire = wire
        self.codec = codec
        self.peer = peer
        self.session: Session | None = None
        self.state = ESTABLISHING
        self._encode = codec.serializer.encode
        self._decode = codec.serializer.decode
        self._hello_timer = reactor.callLater(hello_timeout, self._no_hello) if hello_timeout > 0 else None

    # -- inbound ---------------------------------------------------------------------------------
    def on_message(self, payload: bytes) -> None:
        try:
            msg = self._decode(payload)
        except SerializationError as e:
            self.abort(wamp.PROTOCOL_VIOLATION, str(e))
            return
        problem = wamp.validate(msg)
        if problem is not None:
            self.abort(wamp.PROTOCOL_VIOLATION, problem)
            return
        session = self.session
        if session is None:
            self._establishing(msg)
            return
        code = msg[0]
        now = time.time()
        session.msgs_in += 1
        session.last_active = now
        handler = session.realm.handlers.get(code)
        if handler is None:
            self._session_control(msg)
            return
        if code in REQUESTS and (session.rate is not None or session.quota is not None):
            if not self._within_limits(session, msg, now):
                return
        try:
            handler(session, msg)
        except wamp.ProtocolViolation as e:
            self.abort(wamp.PROTOCOL_VIOLATION, str(e))
        except Exception:
            self.log.failure("routing {msg} from session {sid} failed",
                             msg=wamp.MESSAGE_NAMES.get(code), sid=session.id)

    def _within_limits(self, session: Session, msg: list, now: float) -> bool:
        """Rate and quota windows; an over-limit request gets an ERROR and is not routed."""
        wait, uri = 0.0, None
        if session.rate is not None:
            wait = session.rate.hit(now)
            uri = wamp.RATE_LIMITED
        if not wait and session.quota is not None:
            wait = session.quota.spend(now)
            uri = wamp.QUOTA_EXCEEDED
        if not wait:
            return True
        code = msg[0]
        # An unacknowledged PUBLISH has no one waiting for an answer; it is just not delivered.
        if code != wamp.PUBLISH or msg[2].get("acknowledge"):
            self.send(wamp.error(code, msg[1], uri, [f"request refused: {uri}; retry in {wait:.3f}s"],
                                 details={"retry_after": round(wait, 3)}))
        return False

    def _establishing(self, msg: list) -> None:
        code = msg[0]
        if self.state == CLOSING:
            # Our GOODBYE awaits its answer; the spec says to ignore anything else meanwhile.
            if code == wamp.GOODBYE:
                self.state = CLOSED
                self.wire.close_transport("goodbye")
            return
        if self.state == CLOSED:
            return
        if code == wamp.HELLO:
            self._hello(msg[1], msg[2])
        elif code == wamp.ABORT:
            self.wire.close_transport("client aborted")
        else:
            self.abort(wamp.PROTOCOL_VIOLATION,
                       f"{wamp.MESSAGE_NAMES[code]} received before the session was established")

    def _session_control(self, msg: list) -> None:
        code = msg[0]
        if code == wamp.GOODBYE:
            # The client leaves; reply and keep the transport (the spec lets a new HELLO follow).
            self.send([wamp.GOODBYE, {}, wamp.GOODBYE_AND_OUT])
            self._end_session(f"client said goodbye ({msg[2]})")
        elif code == wamp.ABORT:
            self._end_session("client aborted")
            self.wire.close_transport("client aborted")
        else:
            self.abort(wamp.PROTOCOL_VIOLATION,
                       f"{wamp.MESSAGE_NAMES[code]} received on an established session")

    # -- establishing ----------------------------------------------------------------------------
    def _hello(self, realm_uri: str, details: dict) -> None:
        roles = details.get("roles")
        if not isinstance(roles, dict) or not roles or not CLIENT_ROLES.issuperset(roles):
            self.abort(wamp.PROTOCOL_VIOLATION,
                       "HELLO.Details.roles must announce at least one of caller, callee, publisher, subscriber")
            return
        if not wamp.is_valid_uri(realm_uri):
            self.abort(wamp.INVALID_URI, f"invalid realm URI {realm_uri!r}")
            return
        spec = self.node.realms.get(realm_uri)
        if spec is None:
            self.abort(wamp.NO_SUCH_REALM, f"no realm {realm_uri!r} on this router")
            return
        methods = details.get("authmethods", ["anonymous"])
        if not isinstance(methods, list):
            self.abort(wamp.PROTOCOL_VIOLATION, "HELLO.Details.authmethods must be a list")
            return
        if not spec.anonymous or "anonymous" not in methods:
            self.abort(wamp.NO_AUTH_METHOD,
                       f"no authentication method offered ({methods}) is enabled on realm {realm_uri!r}")
            return
        authid = _anonymous_authid()
        self._welcome(spec, realm_uri, details, roles, authid, spec.anonymous_authrole, "anonymous", "static")

    def _welcome(self, spec: Any, realm_uri: str, details: dict, roles: dict, authid: str, authrole: str,
                 authmethod: str, authprovider: str, authextra: dict | None = None) -> None:
        limits = spec.limits_for(authrole)
        agent = details.get("agent")
        realm = self.node.realm_router(realm_uri)
        try:
            session = self.node.table.open(
                realm_uri, self, peer=self.peer, agent=agent if isinstance(agent, str) else None,
                roles=roles, authid=authid, authrole=authrole, authmethod=authmethod,
                authprovider=authprovider, authextra=authextra, expires_in=limits.expires_in,
                rate=RateWindow(limits.rate.limit, limits.rate.duration) if limits.rate else None,
                quota=QuotaWindow(limits.quota.limit, limits.quota.duration) if limits.quota else None,
                realm=realm)
        except TableFull as e:
            self.abort(wamp.TOO_MANY_SESSIONS, str(e))
            return
        self.session = session
        self.state = ESTABLISHED
        self._cancel_hello_timer()
        self.send([wamp.WELCOME, session.id, {
            "realm": realm_uri, "authid": authid, "authrole": authrole, "authmethod": authmethod,
            "authprovider": authprovider, "authextra": authextra or {}, "agent": ROUTER_AGENT,
            "roles": realm.roles(),
        }])
        self.log.info("session {sid} joined realm {realm} from {peer} as {authid}/{authrole} ({agent})",
                      sid=session.id, realm=realm_uri, peer=_peer(self.peer), authid=authid,
                      authrole=authrole, agent=session.agent)
        realm.attach(session)

    # -- outbound --------------------------------------------------------------------------------
    def send(self, msg: list) -> None:
        if self.state == CLOSED:
            return
        session = self.session
        if session is not None:
            session.msgs_out += 1
        self.wire.send_payload(self._encode(msg))

    def send_prepared(self, frame: Any) -> None:
        if self.state == ESTABLISHED and self.wire.send_prepared(frame):
            self.session.msgs_out += 1

    def close(self, reason: str = wamp.CLOSE_NORMAL, message: str | None = None) -> None:
        """Router-initiated end of session: GOODBYE now, transport closed when the client answers
        (or after a short grace, for clients that never do)."""
        if self.state != ESTABLISHED:
            return
        self.send([wamp.GOODBYE, {"message": message} if message else {}, reason])
        self._end_session(f"router said goodbye ({reason})")
        self.state = CLOSING
        reactor.callLater(self.node.goodbye_timeout, self._goodbye_timeout)

    def abort(self, reason: str, message: str) -> None:
        """ABORT with the spec's reason, log one line, end the session and the connection."""
        if self.state == CLOSED:
            return
        self.log.warn("aborting connection from {peer}: {reason}: {message}",
                      peer=_peer(self.peer), reason=reason, message=message)
        self.send([wamp.ABORT, {"message": message}, reason])
        self._end_session(f"aborted ({reason})")
        self.state = CLOSED
        self.wire.close_transport(reason)

    # -- endings ---------------------------------------------------------------------------------
    def on_close(self) -> None:
        """The connection is gone (cleanly or not): the session and everything it held go with it."""
        self._cancel_hello_timer()
        self._end_session("connection lost")
        self.state = CLOSED

    def _end_session(self, why: str) -> None:
        session = self.session
        if session is None:
            return
        self.session = None
        self.state = ESTABLISHING
        self.node.table.close(session.id)
        self.log.info("session {sid} left realm {realm}: {why}", sid=session.id, realm=session.realm_uri,
                      why=why)

    def _goodbye_timeout(self) -> None:
        if self.state == CLOSING:
            self.state = CLOSED
            self.wire.close_transport("no GOODBYE reply")

    def _no_hello(self) -> None:
        self._hello_timer = None
        if self.session is None and self.state == ESTABLISHING:
            self.log.warn("closing connection from {peer}: no HELLO in time", peer=_peer(self.peer))
            self.state = CLOSED
            self.wire.close_transport("no HELLO in time")

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None:
            if self._hello_timer.active():
                self._hello_timer.cancel()
            self._hello_timer = None


def _anonymous_authid() -> str:
    """Anonymous sessions get a random authid, as in Crossbar.io (XXXX-XXXX-XXXX)."""
    raw = secrets.token_hex(6).upper()
    return f"{raw[0:4]}-{raw[4:8]}-{raw[8:12]}"


def _peer(peer: tuple[str, int] | None) -> str:
    return f"{peer[0]}:{peer[1]}" if peer else "?"
