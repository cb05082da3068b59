"""The WAMP session state machine of one connection, independent of the transport (after Bondy's
`bondy_wamp_protocol`): decode, validate, establish (HELLO → WELCOME), route, close.

A transport creates one WampProtocol per connection and feeds it whole messages; the protocol writes
back through the transport's `send_payload` / `send_prepared` / `close_transport`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer, reactor
from twisted.logger import Logger

from router import lograte, wamp
from router.auth import FAILED, TOO_MANY_AUTHENTICATIONS, Challenge, Deny, Welcome
from router.auth.cookie import LOGOUT
from router.auth.methods import METHODS
from router.auth.throttle import throttle_key
from router.metrics import NO_REALM
from router.serializers import SerializationError, Serializer
from router.session import AUTHENTICATING, CLOSED, CLOSING, ESTABLISHED, ESTABLISHING, QuotaWindow, RateWindow, Session
from router.transport.admission import TOO_MANY_PER_AUTHID
from router.transport.tls import channel_id
from router.tuplespace import TableFull

if TYPE_CHECKING:
    from router.edges import Router

ROUTER_AGENT = wamp.ROUTER_AGENT
CLIENT_ROLES = frozenset({"caller", "callee", "publisher", "subscriber"})
MAX_AGENT = 256  # characters of HELLO.Details.agent kept in the session record
# Requests counted against a session's rate and quota windows (answers such as YIELD are not).
REQUESTS = frozenset({wamp.PUBLISH, wamp.SUBSCRIBE, wamp.UNSUBSCRIBE, wamp.CALL, wamp.REGISTER,
                      wamp.UNREGISTER})

# The permission each request needs, checked against the session's role (realms/authorization.py).
ACTIONS = {wamp.CALL: "call", wamp.REGISTER: "register", wamp.PUBLISH: "publish", wamp.SUBSCRIBE: "subscribe"}
PATTERNED = frozenset({wamp.REGISTER, wamp.SUBSCRIBE})  # requests that may carry a match policy


# `courtyard start --log-level debug` logs each routed message (one short line). A module flag set once
# at start, so that with it off a message costs one global read, not a logger call building an event.
TRACE = False
_CALL, _PUBLISH, _RESULT = wamp.CALL, wamp.PUBLISH, wamp.RESULT
MAX_TIMED_CALLS = 10_000  # a session's calls timed at once (router.metrics); more go untimed
_URI_AT = {wamp.CALL: 3, wamp.PUBLISH: 3, wamp.SUBSCRIBE: 3, wamp.REGISTER: 3, wamp.ERROR: 4}


def trace(on: bool) -> None:
    """Log each routed message at debug from now on (or stop)."""
    global TRACE
    TRACE = on


class Codec(Protocol):
    """One per (transport listener, serializer): encodes a message and frames it for the wire once,
    so that an EVENT fanned out to many peers of the same kind is serialized once."""

    serializer: Serializer

    def prepare(self, msg: list) -> Any: ...


class Wire(Protocol):
    """What the protocol needs from its transport. The sends return None when the message was written
    (or the connection is going anyway), else why not: wamp.PAYLOAD_SIZE_EXCEEDED (larger than the peer
    takes) or SLOW_CONSUMER (past the peer's outgoing budget, see router.transport.flow)."""

    def send_payload(self, payload: bytes, bulk: bool) -> str | None: ...

    def send_prepared(self, frame: Any) -> str | None: ...

    def close_transport(self, reason: str) -> None: ...


SLOW_CONSUMER = "slow_consumer"  # a Wire's refusal; a call it fails gets wamp.error.canceled
# Messages that carry an application payload: refused past a slow peer's budget (and an ERROR relaying a
# callee's payload, see Dealer.error).
BULK = frozenset({wamp.EVENT, wamp.INVOCATION, wamp.RESULT})
_FAILED_ANSWER = {
    wamp.PAYLOAD_SIZE_EXCEEDED: (wamp.PAYLOAD_SIZE_EXCEEDED, "the answer is larger than this connection takes"),
    SLOW_CONSUMER: (wamp.CANCELED, "the answer was dropped: this session reads too slowly"),
}


class WampProtocol:
    log = Logger()

    __slots__ = ("node", "cookie", "_auth", "_verifying", "wire", "codec", "peer", "session", "state", "_encode",
                 "_decode", "_hello_timer", "_hello_timeout", "_sequential", "_last_request", "_in", "_out",
                 "_hello_at", "_timings", "_calls", "_pub")

    def __init__(self, node: Router, wire: Wire, codec: Codec, peer: tuple[str, int] | None,
                 hello_timeout: float = 0.0, cookie: str | None = None) -> None:
        self.node = node
        self.cookie = cookie  # the transport's tracking cookie, if it has one (WebSocket)
        self._auth: tuple | None = None  # (realm spec, details, roles, method) while authenticating
        self._verifying = False
        self.wire = wire
        self.codec = codec
        self.peer = peer
        self.session: Session | None = None
        self.state = ESTABLISHING
        self._encode = codec.serializer.encode
        self._decode = codec.serializer.decode
        self._hello_timeout = hello_timeout
        self._hello_timer = reactor.callLater(hello_timeout, self._no_hello) if hello_timeout > 0 else None
        self._sequential = node.config.sequential_request_ids
        self._last_request = 0  # the session's latest request id, when they must be sequential
        self._in, self._out = node.stats.msgs_in, node.stats.msgs_out  # the node's counts per message type
        self._hello_at = 0.0  # perf_counter() at HELLO, for the join time
        self._timings: Any = None  # the realm's RealmTimings (router.metrics), from WELCOME on
        self._calls: dict[int, tuple[float, str]] | None = None  # request id -> (time.time() at CALL, procedure)
        self._pub: tuple[int, str] | None = None  # the latest PUBLISH's (request id, topic): its ERROR's topic

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
        self._in[msg[0]] += 1
        session = self.session
        if session is None:
            self._establishing(msg)
            return
        code = msg[0]
        now = time.time()
        if code == _CALL:  # timed until its RESULT or ERROR is written (send, _error_sent)
            calls = self._calls
            if calls is None:
                calls = self._calls = {}
            if msg[1] not in calls and len(calls) < MAX_TIMED_CALLS:
                calls[msg[1]] = (now, msg[3])
        elif code == _PUBLISH:
            self._pub = (msg[1], msg[3])
        session.msgs_in += 1
        session.last_active = now
        handler = session.realm.handlers.get(code)
        if handler is None:
            self._session_control(msg)
            return
        if code in REQUESTS:
            if self._sequential and not self._in_sequence(code, msg[1]):
                return
            if (session.rate is not None or session.quota is not None) and not self._within_limits(session, msg, now):
                return
            if code in ACTIONS:
                if len(msg[3]) > wamp.max_uri_length:  # before any lookup or cache sees it
                    self._uri_too_long(session, msg)
                    return
                role = session.authorizer
                if role is not None and not self._authorized(role, code, msg):
                    self._not_authorized(session, msg)
                    return
                top = session.realm.tops.get(code)  # CALLs per procedure, PUBLISHes per topic (router.metrics)
                if top is not None:
                    counts, uri = top.counts, msg[3]
                    n = counts.get(uri)
                    if n is None:
                        top.hit(uri)
                    else:
                        counts[uri] = n + 1
        if TRACE:
            self._trace(session, code, msg)
        try:
            if code == _PUBLISH:  # the fan-out time: local EVENTs written, remote ones queued
                handler(session, msg)
                timings = self._timings  # None only for a session made without WELCOME (bench.inprocess)
                if timings is not None:  # Histogram.observe, inlined: this is the hot path
                    h = timings.topics.by_key.get(msg[3]) or timings.topics.get(msg[3])
                    dt = time.time() - now
                    h.counts[bisect_left(h.bounds, dt)] += 1
                    h.sum += dt
            else:
                handler(session, msg)
        except wamp.ProtocolViolation as e:
            self.abort(wamp.PROTOCOL_VIOLATION, str(e))
        except Exception:
            self.log.failure("routing {msg} from session {sid} failed",
                             msg=wamp.MESSAGE_NAMES.get(code), sid=session.id)

    def _trace(self, session: Session, code: int, msg: list) -> None:
        """One debug line for a message about to be routed: its type, the session, its realm and URI."""
        at = _URI_AT.get(code)
        uri = msg[at] if at is not None and len(msg) > at else None
        name = wamp.MESSAGE_NAMES.get(code, str(code))
        if type(uri) is str:
            self.log.debug("session {sid} in {realm}: {msg} {uri}", sid=session.id, realm=session.realm_uri,
                           msg=name, uri=wamp.printable(uri, 200))
        else:
            self.log.debug("session {sid} in {realm}: {msg}", sid=session.id, realm=session.realm_uri, msg=name)

    def _in_sequence(self, code: int, request: int) -> bool:
        """WAMP spec, IDs: a client's request ids count 1, 2, 3, … per session (wrapping to 1 after 2^53).
        A CALL may repeat the latest id: the next chunk of a progressive call invocation."""
        expected = self._last_request + 1 if self._last_request < wamp.MAX_ID else 1
        if request == expected:
            self._last_request = request
            return True
        if code == wamp.CALL and request == self._last_request:
            return True
        self.abort(wamp.PROTOCOL_VIOLATION, f"request id {request} is out of sequence (expected {expected})")
        return False

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
        self.node.stats.refused(session.realm_uri, "rate_limited" if uri == wamp.RATE_LIMITED else "quota_exceeded",
                                session.authid, _request(msg), _peer(self.peer))
        # An unacknowledged PUBLISH has no one waiting for an answer; it is just not delivered.
        if code != wamp.PUBLISH or msg[2].get("acknowledge"):
            self.send(wamp.error(code, msg[1], uri, [f"request refused: {uri}; retry in {wait:.3f}s"],
                                 details={"retry_after": round(wait, 3)}))
        return False

    @staticmethod
    def _authorized(role: Any, code: int, msg: list) -> bool:
        """The role's cached decision; a pattern SUBSCRIBE or REGISTER must be allowed on every URI it can match."""
        if code in PATTERNED:
            match = msg[2].get("match")
            if match == "prefix" or match == "wildcard":
                return role.allows_pattern(ACTIONS[code], msg[3], match)
        return role.allows(ACTIONS[code], msg[3])

    def _not_authorized(self, session: Session, msg: list) -> None:
        code, action, uri = msg[0], ACTIONS[msg[0]], msg[3]
        self.node.stats.refused(session.realm_uri, "not_authorized", session.authid, _request(msg), _peer(self.peer))
        lograte.refused(self.log, "info", "not_authorized", session.id,
                        "session {sid} ({authid}/{authrole}) denied {action} on {uri}", sid=session.id,
                        authid=session.authid, authrole=session.authrole, action=action, uri=uri)
        if code != wamp.PUBLISH or msg[2].get("acknowledge"):
            self.send(wamp.error(code, msg[1], wamp.NOT_AUTHORIZED,
                                 [f"role {session.authrole!r} may not {action} {wamp.quote(uri)}"]))

    def _uri_too_long(self, session: Session, msg: list) -> None:
        code = msg[0]
        text = wamp.uri_refusal(ACTIONS[code], msg[3])
        lograte.refused(self.log, "info", "uri_too_long", session.id, "session {sid}: {msg} refused: {why}",
                        sid=session.id, msg=wamp.MESSAGE_NAMES[code], why=text)
        if code != wamp.PUBLISH or msg[2].get("acknowledge"):
            self.send(wamp.error(code, msg[1], wamp.INVALID_URI, [text]))

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
        if code == wamp.HELLO and self.state == ESTABLISHING and not self._verifying:
            self._hello_at = perf_counter()
            self._hello(msg[1], msg[2])
        elif code == wamp.AUTHENTICATE and self.state == AUTHENTICATING and not self._verifying:
            self._verifying = True
            self._verify(msg[1], msg[2])
        elif code == wamp.ABORT:
            self.wire.close_transport("client aborted")
        else:
            self.abort(wamp.PROTOCOL_VIOLATION,
                       f"{wamp.MESSAGE_NAMES[code]} received before the session was established")

    def _session_control(self, msg: list) -> None:
        code = msg[0]
        if code == wamp.GOODBYE:
            # The client leaves; reply and keep the transport (the spec lets a new HELLO follow), but
            # only for hello_timeout: a connection without a session holds no slot in max_sessions.
            if wamp.too_long(msg[2]):
                self.abort(wamp.INVALID_URI, wamp.uri_refusal("GOODBYE reason", msg[2]))
                return
            if msg[2] == LOGOUT:
                self.node.cookies.revoke(self.cookie)
            self.send([wamp.GOODBYE, {}, wamp.GOODBYE_AND_OUT])
            self._end_session(f"client said goodbye ({wamp.quote(msg[2])})")
            if self._hello_timeout > 0:
                self._hello_timer = reactor.callLater(self._hello_timeout, self._no_hello)
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
        roles = _shared_roles(roles)
        if not wamp.is_valid_uri(realm_uri):
            self.abort(wamp.INVALID_URI, wamp.uri_refusal("realm", realm_uri))
            return
        spec = self.node.realms.get(realm_uri)
        if spec is None:
            self.abort(wamp.NO_SUCH_REALM, f"no realm {wamp.quote(realm_uri)} on this router")
            return
        offered = details.get("authmethods") or ["anonymous"]
        if not isinstance(offered, list):
            self.abort(wamp.PROTOCOL_VIOLATION, "HELLO.Details.authmethods must be a list")
            return
        if "cookie" in offered and spec.auth.cookie:
            who = self.node.cookies.lookup(self.cookie, realm_uri)
            if isinstance(who, defer.Deferred):  # a cluster's cookie store answers from Redis
                self._verifying = True
                who.addCallback(self._cookie_looked_up, spec, details, roles, offered)
                who.addErrback(self._auth_crashed)
                return
            if who is not None:
                self._welcome(spec, details, roles, who)
                return
        self._challenge(spec, details, roles, offered)

    def _cookie_looked_up(self, who: Welcome | None, spec: Any, details: dict, roles: dict, offered: list) -> None:
        self._verifying = False
        if self.state == CLOSED:
            return
        if who is not None:
            self._welcome(spec, details, roles, who)
        else:
            self._challenge(spec, details, roles, offered)

    def _challenge(self, spec: Any, details: dict, roles: dict, offered: list) -> None:
        """Authenticate by the first method offered that the realm enables."""
        realm_uri = spec.uri
        enabled = spec.auth.enabled()
        chosen = next((m for m in offered if m in enabled and m in METHODS), None)
        if chosen is None:
            self.abort(wamp.NO_AUTH_METHOD,
                       f"none of the authentication methods offered ({wamp.quote(offered)}) is enabled on realm "
                       f"{wamp.quote(realm_uri)}")
            return
        cls = METHODS[chosen]
        throttle = spec.auth.throttle
        if throttle.max_failures and chosen != "anonymous":  # refused now, rather than after a CHALLENGE
            key = throttle_key(realm_uri, _address(self.peer), cls.principal(details))
            why = self.node.throttle.blocked(key)
            if why is not None:
                self.node.stats.refused(realm_uri, "authentication_throttled", cls.principal(details), chosen,
                                        _peer(self.peer))
                self.abort(wamp.NOT_AUTHORIZED, why)
                return
        method = cls(spec)
        if chosen == "cryptosign":  # channel binding reads the TLS connection under the transport
            method.channel_id = lambda: channel_id(getattr(self.wire, "transport", None))
        self._auth = (spec, details, roles, method)
        self._answer(method.hello(details))

    def _verify(self, signature: str, extra: dict) -> None:
        """Verify an AUTHENTICATE, unless the throttle refuses it first (then no hash is computed)."""
        spec, details, roles, method = self._auth
        key = throttle_key(spec.uri, _address(self.peer), method.principal(details))
        vetting = self.node.throttle.vet(key, spec.auth.throttle)  # a cluster's: every node's failures
        if vetting is None:
            self._verify_now(key, signature, extra)
        else:
            vetting.addCallback(self._vetted, key, signature, extra).addErrback(self._auth_crashed)

    def _vetted(self, refused: tuple[str, str] | None, key: Any, signature: str, extra: dict) -> None:
        if self.state == CLOSED or self._auth is None:
            return  # the connection went while Redis answered
        if refused is not None:
            self.abort(*refused)
        else:
            self._verify_now(key, signature, extra)

    def _verify_now(self, key: Any, signature: str, extra: dict) -> None:
        spec, details, roles, method = self._auth
        config = spec.auth.throttle
        throttle = self.node.throttle
        refused = throttle.begin(key, config)
        if refused is not None:
            if refused[0] == TOO_MANY_AUTHENTICATIONS and throttle.wait(
                    key, config, lambda free: self._slot(free, key, signature, extra, refused)):
                return  # an in-flight cap: wait a moment for a slot (router/auth/throttle.py)
            self.node.stats.refused(spec.uri, "authentication_throttled", method.principal(details), method.name,
                                    _peer(self.peer))
            self.abort(*refused)
            return

        def done(outcome: Any) -> Any:  # the slot is freed whatever happens, even if the peer has gone
            throttle.end(key, isinstance(outcome, Deny) and outcome.reason == FAILED, config)
            return outcome

        outcome = defer.maybeDeferred(method.authenticate, signature, extra)
        outcome.addBoth(done).addCallback(self._answer).addErrback(self._auth_crashed)

    def _slot(self, free: bool, key: Any, signature: str, extra: dict, refused: tuple[str, str]) -> bool:
        """A waiting answer's turn (`free`) or its time up; True if it took the verification slot."""
        if self.state == CLOSED or self._auth is None:
            return False
        if not free:
            self.abort(*refused)
            return False
        before = self.node.throttle.in_flight
        self._verify_now(key, signature, extra)
        return self.node.throttle.in_flight > before

    def _answer(self, outcome: Welcome | Challenge | Deny | defer.Deferred) -> None:
        """Act on an authentication method's answer, which may come later (a Deferred)."""
        if isinstance(outcome, defer.Deferred):
            outcome.addCallback(self._answer).addErrback(self._auth_crashed)
            return
        if self.state == CLOSED or self._auth is None:
            return  # the connection went while we were verifying
        spec, details, roles, method = self._auth
        if isinstance(outcome, Welcome):
            self._auth = None
            self._verifying = False  # a HELLO may follow this session's GOODBYE
            self._welcome(spec, details, roles, outcome)
        elif isinstance(outcome, Challenge):
            self.state = AUTHENTICATING
            self._verifying = False
            self.send([wamp.CHALLENGE, outcome.authmethod, outcome.extra])
        else:
            # warn: what an operator watches for (guessing); who and where, client text quoted short
            stats = self.node.stats
            stats.authenticated(method.name, False, spec.uri)
            stats.refused(spec.uri, "authentication_failed", method.principal(details), method.name, _peer(self.peer))
            lograte.refused(self.log, "warn", "authentication_failed", _address(self.peer),
                            "authentication to realm {realm} as {authid} by {method} from {peer} refused: {why}",
                            realm=spec.uri, authid=wamp.printable(str(method.principal(details)), 200),
                            method=method.name, peer=_peer(self.peer), why=outcome.message)
            self.abort(outcome.reason, outcome.message, quiet=True)

    def _auth_crashed(self, failure) -> None:
        self.log.failure("authentication failed with an error", failure)
        self.abort(FAILED, "authentication could not be completed")

    def _welcome(self, spec: Any, details: dict, roles: dict, who: Welcome) -> None:
        realm_uri = spec.uri
        if spec.join_roles is not None and who.authrole not in spec.join_roles:
            self.abort(wamp.NOT_AUTHORIZED, f"role {who.authrole!r} may not join realm {wamp.quote(realm_uri)}")
            return
        limits = spec.limits_for(who.authrole)
        agent = details.get("agent")
        realm = self.node.realm_router(realm_uri)
        if realm is None:  # deleted through the admin realm while the client authenticated
            self.abort(wamp.NO_SUCH_REALM, f"no realm {realm_uri!r} on this router")
            return
        refused = self.node.admission.session(self.node.table, realm_uri, who.authid, who.authmethod)
        if refused is not None:  # limits.max_sessions_per_authid
            self.abort(TOO_MANY_PER_AUTHID, refused)
            return
        role = spec.role(who.authrole)
        try:
            session = self.node.table.open(
                realm_uri, self, peer=self.peer, agent=agent[:MAX_AGENT] if isinstance(agent, str) else None,
                roles=roles, authid=who.authid, authrole=who.authrole, authmethod=who.authmethod,
                authprovider=who.authprovider, authextra=who.authextra, expires_in=limits.expires_in,
                rate=RateWindow(limits.rate.limit, limits.rate.duration) if limits.rate else None,
                quota=QuotaWindow(limits.quota.limit, limits.quota.duration) if limits.quota else None,
                realm=realm)
        except TableFull as e:
            self.abort(wamp.TOO_MANY_SESSIONS, str(e))
            return
        session.authorizer = None if role is None or role.allows_everything() else role
        self.node.stats.authenticated(who.authmethod, True, realm_uri)
        if spec.auth.cookie and self.cookie and who.authmethod != "cookie":
            self.node.cookies.bind(self.cookie, realm_uri, who, spec.auth.cookie_max_age)
        self.session = session
        self._last_request = 0
        self.state = ESTABLISHED
        self._cancel_hello_timer()
        welcome = [wamp.WELCOME, session.id, {
            "realm": realm_uri, "authid": who.authid, "authrole": who.authrole, "authmethod": who.authmethod,
            "authprovider": who.authprovider, "authextra": who.authextra or {}, "agent": ROUTER_AGENT,
            "roles": realm.roles(),
        }]
        if self.send(welcome) is not None:
            # A peer that takes only small messages (a RawSocket client may announce 512 bytes) gets the
            # router's roles without their feature lists rather than no WELCOME at all.
            welcome[2]["roles"] = {"broker": {}, "dealer": {}}
            if self.send(welcome) is not None:
                self.abort(wamp.PAYLOAD_SIZE_EXCEEDED, "WELCOME is larger than this connection takes")
                return
        stats = self.node.stats
        stats.joins.observe(perf_counter() - self._hello_at)
        self._timings = stats.realm_timings(realm_uri)
        self._calls = None  # a previous session's unanswered calls on this connection are not this one's
        self.log.info("session {sid} joined realm {realm} from {peer} as {authid}/{authrole} by {method} ({agent})",
                      sid=session.id, realm=realm_uri, peer=_peer(self.peer), authid=who.authid,
                      authrole=who.authrole, method=who.authmethod,
                      agent=wamp.quote(session.agent) if session.agent else "no agent")
        realm.attach(session)

    # -- outbound --------------------------------------------------------------------------------
    def send(self, msg: list, bulk: bool = False) -> str | None:
        """Write one message. Returns None when written, else the error URI saying why not (the caller
        fails the call it belongs to): a message this peer cannot take is its problem alone and never
        raises into the loop that sends it. EVENT, INVOCATION and RESULT are bulk (see
        router.transport.flow); so is an ERROR when the sender says it carries a callee's payload.
        A RESULT or ERROR answering a CALL that cannot be written is replaced by a short ERROR, so the
        caller is never left waiting."""
        if self.state == CLOSED:
            return None
        code = msg[0]
        if code == _RESULT and self._calls and not msg[2].get("progress"):
            self._call_done(msg[1], False)
        why = self._write(msg, bulk or code in BULK)
        if why is None:
            return None
        uri, text = why
        if code == wamp.RESULT or (code == wamp.ERROR and msg[1] == wamp.CALL):
            self._write(wamp.error(wamp.CALL, msg[1] if code == wamp.RESULT else msg[2], uri, [text]), False)
        return uri

    def _write(self, msg: list, bulk: bool) -> tuple[str, str] | None:
        """Encode and hand to the wire; None when written, else (error URI, why) after one log line."""
        try:
            payload = self._encode(msg)
        except Exception as e:  # a value this serializer cannot carry: NaN for JSON, 2^64 for msgpack, ...
            uri = wamp.INVALID_ARGUMENT
            text = f"the message cannot be written in {self.codec.serializer.name}: {wamp.quote(str(e))}"
        else:
            refused = self.wire.send_payload(payload, bulk)
            if refused is None:
                session = self.session
                if session is not None:
                    session.msgs_out += 1
                code = msg[0]
                self._out[code] += 1
                if code <= 8:  # wamp.ERROR or wamp.ABORT among them: counted by URI
                    self._error_sent(msg)
                return None
            uri, text = _FAILED_ANSWER[refused]
            if refused == SLOW_CONSUMER:
                return uri, text  # logged once per episode by the flow control
            text = f"{text} ({len(payload)} bytes)"
        lograte.refused(self.log, "info", "not_sent", _peer(self.peer), "not sending {msg} to {peer}: {why}",
                        msg=wamp.MESSAGE_NAMES.get(msg[0], "?"), peer=_peer(self.peer), why=text)
        return uri, text

    def _error_sent(self, msg: list) -> None:
        code = msg[0]
        session = self.session
        realm = session.realm_uri if session is not None else self._auth[0].uri if self._auth else NO_REALM
        if code == wamp.ERROR:
            self.node.stats.error_sent(realm, msg[4])
            if msg[1] == _CALL and self._calls:
                self._call_done(msg[2], True)
            elif msg[1] == _PUBLISH and self._pub is not None and self._pub[0] == msg[2] and self._timings:
                self._timings.topics.get(self._pub[1]).errors += 1
        elif code == wamp.ABORT:
            self.node.stats.error_sent(realm, msg[2])

    def _call_done(self, request: int, error: bool) -> None:
        """A call's RESULT or ERROR is written: its round trip, for the realm and the procedure."""
        started = self._calls.pop(request, None)
        if started is None:
            return
        timings = self._timings
        if timings is None:
            return
        dt = time.time() - started[0]
        h = timings.procedures.by_key.get(started[1]) or timings.procedures.get(started[1])
        h.counts[bisect_left(h.bounds, dt)] += 1  # Histogram.observe, inlined: this is the hot path
        h.sum += dt
        if error:
            h.errors += 1

    def send_prepared(self, frame: Any) -> str | None:
        """Write a frame prepared once for many peers (an EVENT); None when written, else why not."""
        if self.state != ESTABLISHED:
            return None
        why = self.wire.send_prepared(frame)
        if why is None:
            session = self.session
            session.msgs_out += 1
            session.realm.events_delivered += 1  # counted per realm only (router.metrics adds them up)
        return why

    def close(self, reason: str = wamp.CLOSE_NORMAL, message: str | None = None) -> None:
        """Router-initiated end of session: GOODBYE now, transport closed when the client answers
        (or after a short grace, for clients that never do)."""
        if self.state != ESTABLISHED:
            return
        if self.send([wamp.GOODBYE, {"message": message} if message else {}, reason]) is not None and message:
            self.send([wamp.GOODBYE, {}, reason])  # the reason still, without a message the peer cannot take
        self._end_session(f"router said goodbye ({reason})")
        self.state = CLOSING
        reactor.callLater(self.node.goodbye_timeout, self._goodbye_timeout)

    def abort(self, reason: str, message: str, quiet: bool = False) -> None:
        """ABORT with the spec's reason, log one line, end the session and the connection."""
        if self.state == CLOSED:
            return
        if not quiet:
            lograte.refused(self.log, "warn", f"abort {reason}", _address(self.peer),
                            "aborting connection from {peer}: {reason}: {message}", peer=_peer(self.peer),
                            reason=reason, message=message)
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
        self.node.table.close(session.id, why)
        self.log.info("session {sid} left realm {realm}: {why}", sid=session.id, realm=session.realm_uri,
                      why=why)

    def _goodbye_timeout(self) -> None:
        if self.state == CLOSING:
            self.state = CLOSED
            self.wire.close_transport("no GOODBYE reply")

    def _no_hello(self) -> None:
        self._hello_timer = None
        if self.session is None and self.state in (ESTABLISHING, AUTHENTICATING):
            lograte.refused(self.log, "warn", "no_hello", _address(self.peer),
                            "closing connection from {peer}: no HELLO in time", peer=_peer(self.peer))
            self.state = CLOSED
            self.wire.close_transport("no HELLO in time")

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None:
            if self._hello_timer.active():
                self._hello_timer.cancel()
            self._hello_timer = None


def _request(msg: list) -> str:
    """A refused request as the status page lists it: its type, and its URI if it has one."""
    name = wamp.MESSAGE_NAMES[msg[0]]
    return f"{name} {msg[3]}" if msg[0] in ACTIONS else name


def _address(peer: tuple[str, int] | None) -> str:
    return peer[0] if peer else "?"


def _peer(peer: tuple[str, int] | None) -> str:
    return f"{peer[0]}:{peer[1]}" if peer else "?"


# Clients of one kind announce the same roles and features (autobahn's are two kilobytes): sessions
# share one read-only copy per distinct announcement instead of holding one each. Only what the router
# reads is kept (the four roles and the features announced true, names of at most 64 characters, 64
# per role), so a record's roles are small whatever the HELLO held. Bounded, so that clients announcing
# endless variations only lose the sharing.
_ROLES: dict[tuple, dict] = {}
_ROLES_MAX = 256
_MAX_FEATURES = 64


def _shared_roles(roles: dict) -> dict:
    kept = {}
    for role, announced in roles.items():
        features = announced.get("features") if type(announced) is dict else None
        if type(features) is dict:
            names = [f for f, on in features.items() if on is True and len(f) <= 64][:_MAX_FEATURES]
            kept[role] = {"features": dict.fromkeys(sorted(names), True)}
        else:
            kept[role] = {}
    key = tuple((role, tuple(r.get("features", ()))) for role, r in sorted(kept.items()))
    shared = _ROLES.get(key)
    if shared is not None:
        return shared
    if len(_ROLES) < _ROLES_MAX:
        _ROLES[key] = kept
    return kept
