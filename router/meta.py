"""The WAMP meta API of one realm (WAMP spec, "Session Meta API", "Registration Meta API",
"Subscription Meta API", "Testament"): `wamp.session.*`, `wamp.registration.*` and
`wamp.subscription.*` procedures, their meta events, and testaments.

Procedures are the dealer's built-ins: the dealer consults them only when no registration matches a
CALL (clients cannot register under `wamp.`), so ordinary calls pay nothing, and a meta call is one
dict lookup and a function call answered at once with RESULT or ERROR: no registration, invocation or
pending-call record. Authorization, rate and quota apply to meta calls like to any CALL, because they
are checked before routing.

Events go out through `Broker.emit`, with the router as publisher, to exact and pattern subscriptions.
Each event first looks up the subscriptions matching its topic; with nobody subscribed that lookup is all
it costs. Subscriptions under `wamp.` (the meta topics themselves) are router internals: they produce no
meta events (a monitor would otherwise hear about its own watching) and are not shown by the
subscription procedures, as in Crossbar.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from router import wamp
from router.broker import Broker, Subscription, approx_size
from router.dealer import Dealer, Registration
from router.matching import MATCH_POLICIES
from router.session import Session

if TYPE_CHECKING:
    from router.tuplespace import SessionTable

# Feature flags, announced in WELCOME where the spec places them.
BROKER_FEATURES = {"session_meta_api": True, "subscription_meta_api": True}
DEALER_FEATURES = {"session_meta_api": True, "registration_meta_api": True, "testament_meta_api": True}

# The spec: "if not provided the reason defaults to wamp.close.normal" (wamp.session.kill and kill_by_*).
KILL_REASON = wamp.CLOSE_NORMAL
RUNTIME_ERROR = "wamp.error.runtime_error"
TOO_MANY_TESTAMENTS = "courtyard.error.too_many_testaments"
# Testaments kept per session and scope: they live as long as the session, so they are bounded, in
# count per scope and in (approximate, in-memory) bytes per session.
MAX_TESTAMENTS = 64
MAX_TESTAMENT_BYTES = 1024 * 1024
SCOPES = ("detached", "destroyed")  # publication order on close: detached first (spec, Testament)

# handler(caller, args, kwargs) -> the RESULT's positional arguments, or None for a RESULT without any.
Handler = Callable[[Session, list, dict], "list | None"]


class MetaError(wamp.WampError):
    """Answered as ERROR with this URI and message."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _arg(args: list, i: int, kind: type, what: str, default: Any = ...) -> Any:
    """Positional argument i of the given type (bool is not an int here), or `default` when absent."""
    if len(args) <= i or (args[i] is None and default is not ...):
        if default is ...:
            raise MetaError(wamp.INVALID_ARGUMENT, f"missing argument: {what}")
        return default
    value = args[i]
    if type(value) is not kind and not (kind is dict and isinstance(value, dict)):
        raise MetaError(wamp.INVALID_ARGUMENT, f"{what} must be {kind.__name__}, not {type(value).__name__}")
    if kind is int and not 0 <= value <= wamp.MAX_ID:
        raise MetaError(wamp.INVALID_ARGUMENT, f"{what} must be an id in [0, 2^53]")
    return value


def _uri_arg(args: list, i: int, what: str) -> str:
    """A URI argument (looked up, never kept): a string within limits.max_uri_length."""
    uri = _arg(args, i, str, what)
    if wamp.too_long(uri):
        raise MetaError(wamp.INVALID_URI, wamp.uri_refusal(what, uri))
    return uri


def _reason(kwargs: dict) -> tuple[str, str | None]:
    """The `reason` and `message` keyword arguments of the kill procedures."""
    reason = kwargs.get("reason", KILL_REASON)
    if not wamp.is_valid_uri(reason):
        raise MetaError(wamp.INVALID_URI, wamp.uri_refusal("reason", reason) if wamp.too_long(reason)
                        else f"reason must be a valid URI, not {wamp.quote(reason)}")
    message = kwargs.get("message")
    if message is not None and type(message) is not str:
        raise MetaError(wamp.INVALID_ARGUMENT, "message must be a string")
    return reason, message


def _scope(kwargs: dict) -> str:
    scope = kwargs.get("scope", "destroyed")
    if scope not in SCOPES:
        raise MetaError(wamp.INVALID_ARGUMENT, f"scope must be 'detached' or 'destroyed', not {wamp.quote(scope)}")
    return scope


def _match_policy(args: list, i: int) -> str:
    options = _arg(args, i, dict, "options", {})
    match = options.get("match", "exact")
    if match not in MATCH_POLICIES:
        raise MetaError(wamp.INVALID_ARGUMENT, f"unknown match policy {wamp.quote(match)}")
    return match


class Meta:
    """The meta API of one realm: installs itself as the broker's and dealer's listener and the
    dealer's built-in procedures. `table` gives the session procedures; without it they are absent."""

    log = Logger()

    def __init__(self, realm_uri: str, broker: Broker, dealer: Dealer, table: SessionTable | None) -> None:
        self.realm_uri = realm_uri
        self.broker = broker
        self.dealer = dealer
        self.table = table
        self._testaments: dict[int, dict[str, list[tuple]]] = {}  # session id → scope → testaments
        self._reported: set[int] = set()  # sessions whose leaving the cluster has published already
        broker.listener = self
        dealer.listener = self
        procedures: dict[str, Handler] = {
            "wamp.registration.list": self.registration_list,
            "wamp.registration.lookup": self.registration_lookup,
            "wamp.registration.match": self.registration_match,
            "wamp.registration.get": self.registration_get,
            "wamp.registration.list_callees": self.registration_list_callees,
            "wamp.registration.count_callees": self.registration_count_callees,
            "wamp.subscription.list": self.subscription_list,
            "wamp.subscription.lookup": self.subscription_lookup,
            "wamp.subscription.match": self.subscription_match,
            "wamp.subscription.get": self.subscription_get,
            "wamp.subscription.list_subscribers": self.subscription_list_subscribers,
            "wamp.subscription.count_subscribers": self.subscription_count_subscribers,
            "wamp.session.add_testament": self.add_testament,
            "wamp.session.flush_testaments": self.flush_testaments,
        }
        if table is not None:
            procedures.update({
                "wamp.session.count": self.session_count,
                "wamp.session.list": self.session_list,
                "wamp.session.get": self.session_get,
                "wamp.session.kill": self.session_kill,
                "wamp.session.kill_by_authid": self.session_kill_by_authid,
                "wamp.session.kill_by_authrole": self.session_kill_by_authrole,
                "wamp.session.kill_all": self.session_kill_all,
            })
        for uri, handler in procedures.items():
            dealer.builtins[uri] = self._builtin(handler)

    def _builtin(self, handler: Handler) -> Callable[[Session, list], None]:
        """Wrap a handler as a dealer built-in: CALL in, RESULT or ERROR straight back to the caller."""

        def answer(session: Session, msg: list) -> None:
            request = msg[1]
            args = msg[4] if len(msg) > 4 else []
            kwargs = msg[5] if len(msg) > 5 else {}
            try:
                result = handler(session, args, kwargs)
            except Exception as e:
                self._failed(session, request, msg[3], e)
                return
            if isinstance(result, defer.Deferred):  # a cluster-wide answer, read from Redis
                result.addCallbacks(lambda r: self._answer(session, request, r, later=True),
                                    lambda f: self._failed(session, request, msg[3], f.value, later=True))
                return
            self._answer(session, request, result)

        return answer

    def _answer(self, session: Session, request: int, result: Any, later: bool = False) -> None:
        if later and self.table.lookup(session.id) is not session:
            return  # the caller left while Redis answered
        session.transport.send([wamp.RESULT, request, {}] if result is None else [wamp.RESULT, request, {}, result])

    def _failed(self, session: Session, request: int, procedure: str, e: BaseException, later: bool = False) -> None:
        if later and self.table.lookup(session.id) is not session:
            return
        if isinstance(e, wamp.WampError):  # (MetaError, a cluster's ClusterUnavailable)
            session.transport.send(wamp.error(wamp.CALL, request, e.uri, [e.message]))
            return
        self.log.failure("meta procedure {procedure} failed", failure=Failure(e), procedure=procedure)
        session.transport.send(wamp.error(wamp.CALL, request, RUNTIME_ERROR,
                                          ["the procedure failed; see the router log"]))

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, topic: str, args: list, kwargs: dict | None = None, details: dict | None = None) -> None:
        """Publish as the router, to exact and pattern subscribers alike. With no subscription matching
        `topic` this is one dict lookup."""
        self.broker.emit(topic, args, kwargs, details)

    # -- session lifetime (called by the realm) --------------------------------------------------
    def joined(self, session: Session) -> None:
        self.publish("wamp.session.on_join", [session.to_details_map()])

    def left(self, session: Session) -> None:
        """The session is gone, whatever the cause: its testaments (detached scope first), then on_leave."""
        if self._reported and session.id in self._reported:
            self._reported.discard(session.id)
            return
        testaments = self._testaments.pop(session.id, None)
        if testaments:
            self.publish_testaments(session, testaments)
        self.publish("wamp.session.on_leave", [session.id, session.authid, session.authrole])

    def reported_left(self, session_id: int) -> None:
        """The cluster has published this session's testaments and on_leave already (its node was
        purged while it stalled, router/cluster/membership.py): when it closes, neither is published again."""
        self._testaments.pop(session_id, None)
        self._reported.add(session_id)

    def publish_testaments(self, session: Session, testaments: dict) -> None:
        """`testaments` ({scope: [(topic, args, kwargs, options, ...)]}), detached scope first. Also
        for a session of a dead node (a stand-in Session), from its record in Redis."""
        for scope in SCOPES:
            for topic, args, kwargs, options, *_ in testaments.get(scope, ()):
                # As if the session had sent this PUBLISH: its options (black/whitelists, retain,
                # disclose_me) and its role's disclosure rules apply.
                self.broker.publish(session, [wamp.PUBLISH, 0, options, topic, args, kwargs])

    def _testaments_changed(self, session_id: int) -> None:
        """In a cluster the node keeps a session's testaments in Redis too, so that they are published
        even if the node dies with it (router/cluster/purge.py)."""
        if self.table is not None:
            self.table.testaments_changed(session_id, self._testaments.get(session_id))

    # -- broker and dealer listener --------------------------------------------------------------
    def subscribed(self, session_id: int, sub: Subscription, created: bool) -> None:
        if wamp.is_reserved(sub.topic):
            return
        if created and not self._elsewhere(sub):  # in a cluster: created once, on the first node
            self.publish("wamp.subscription.on_create", [session_id, _subscription_details(sub)])
        self.publish("wamp.subscription.on_subscribe", [session_id, sub.id])

    def unsubscribed(self, session_id: int, sub: Subscription, deleted: bool) -> None:
        if wamp.is_reserved(sub.topic):
            return
        self.publish("wamp.subscription.on_unsubscribe", [session_id, sub.id])
        if deleted and not self._elsewhere(sub):
            self.publish("wamp.subscription.on_delete", [session_id, sub.id])

    def registered(self, session_id: int, reg: Registration, created: bool) -> None:
        if created:
            self.publish("wamp.registration.on_create", [session_id, _registration_details(reg)])
        self.publish("wamp.registration.on_register", [session_id, reg.id])

    def unregistered(self, session_id: int, reg: Registration, deleted: bool) -> None:
        self.publish("wamp.registration.on_unregister", [session_id, reg.id])
        if deleted:
            self.publish("wamp.registration.on_delete", [session_id, reg.id])

    # -- wamp.session.* --------------------------------------------------------------------------
    # One path for one node and N: the session table's cluster_* reads see every node's sessions (in a
    # cluster once every node has said which of its own match, router/cluster/gather.py, so a session
    # counts from its WELCOME until its GOODBYE; on one node the memory store answers at once), and a
    # kill for another node's session is sent to that node, which says GOODBYE.
    @staticmethod
    def _roles(args: list) -> set[str] | None:
        roles = _arg(args, 0, list, "filter_authroles", None)
        if roles is not None and not all(type(r) is str for r in roles):
            raise MetaError(wamp.INVALID_ARGUMENT, "filter_authroles must be a list of strings")
        return None if roles is None else set(roles)

    def _sessions(self, args: list) -> defer.Deferred:
        """Deferred[list[dict]]: the realm's sessions on every node, optionally only those whose authrole
        is in args[0]."""
        roles = self._roles(args)
        if roles is None:
            return self.table.cluster_list(self.realm_uri)
        return defer.gatherResults([self.table.cluster_list(self.realm_uri, authrole=r) for r in sorted(roles)]) \
            .addCallback(lambda lists: [d for found in lists for d in found])

    def _kill(self, found: list[dict], caller: Session, reason: str, message: str | None) -> defer.Deferred:
        """GOODBYE with `reason` to each session found but the caller, wherever it is: Deferred[how many]."""
        others = [d for d in found if d["session"] != caller.id]
        for d in others:
            self.log.info("session {sid} killed by session {caller} ({reason})", sid=d["session"],
                          caller=caller.id, reason=wamp.quote(reason))
        return self.table.cluster_kill(others, reason, message)

    def _details(self, sid: int) -> defer.Deferred:
        """Deferred[dict]: a session of this realm, wherever it is (this node's without asking), or
        no_such_session."""
        session = self.table.lookup(sid)
        found = defer.succeed(session.to_details_map()) if session is not None else self.table.cluster_details(sid)
        return found.addCallback(self._in_realm, sid)

    def session_count(self, caller: Session, args: list, kwargs: dict) -> Any:
        roles = None if not args or args[0] is None else self._roles(args)
        if roles is None:
            return self.table.cluster_size(self.realm_uri).addCallback(lambda n: [n])
        return defer.gatherResults([self.table.cluster_size(self.realm_uri, authrole=r) for r in sorted(roles)]) \
            .addCallback(lambda ns: [sum(ns)])

    def session_list(self, caller: Session, args: list, kwargs: dict) -> Any:
        return self._sessions(args).addCallback(lambda found: [[d["session"] for d in found]])

    def session_get(self, caller: Session, args: list, kwargs: dict) -> Any:
        return self._details(_arg(args, 0, int, "session")).addCallback(lambda d: [d])

    def _in_realm(self, details: dict | None, sid: int) -> dict:
        if details is None or details.get("realm") != self.realm_uri:
            raise MetaError(wamp.NO_SUCH_SESSION, f"no session {sid} in realm {self.realm_uri}")
        return details

    def session_kill(self, caller: Session, args: list, kwargs: dict) -> Any:
        """The caller cannot kill itself: the spec answers no_such_session ("no *other* session")."""
        sid = _arg(args, 0, int, "session")
        reason, message = _reason(kwargs)
        if sid == caller.id:
            raise MetaError(wamp.NO_SUCH_SESSION, f"no session {sid} in realm {self.realm_uri}")
        return self._details(sid).addCallback(lambda d: self._kill([d], caller, reason, message)).addCallback(
            lambda _: None)

    def session_kill_by_authid(self, caller: Session, args: list, kwargs: dict) -> Any:
        authid = _arg(args, 0, str, "authid")
        reason, message = _reason(kwargs)
        return self.table.cluster_list(self.realm_uri, authid=authid).addCallback(
            self._kill, caller, reason, message).addCallback(lambda n: [n])

    def session_kill_by_authrole(self, caller: Session, args: list, kwargs: dict) -> Any:
        authrole = _arg(args, 0, str, "authrole")
        reason, message = _reason(kwargs)
        return self.table.cluster_list(self.realm_uri, authrole=authrole).addCallback(
            self._kill, caller, reason, message).addCallback(lambda n: [n])

    def session_kill_all(self, caller: Session, args: list, kwargs: dict) -> Any:
        reason, message = _reason(kwargs)
        return self.table.cluster_list(self.realm_uri).addCallback(
            self._kill, caller, reason, message).addCallback(lambda n: [n])

    # -- testaments ------------------------------------------------------------------------------
    def add_testament(self, caller: Session, args: list, kwargs: dict) -> None:
        topic = _arg(args, 0, str, "topic")
        if not wamp.is_valid_uri(topic) or wamp.is_reserved(topic):
            raise MetaError(wamp.INVALID_URI, wamp.uri_refusal("topic", topic) if wamp.too_long(topic)
                            else f"invalid or reserved topic URI {wamp.quote(topic)}")
        event_args = _arg(args, 1, list, "args", [])
        event_kwargs = _arg(args, 2, dict, "kwargs", {})
        options = kwargs.get("publish_options") or {}
        if not isinstance(options, dict):
            raise MetaError(wamp.INVALID_ARGUMENT, "publish_options must be a dict")
        options = {k: v for k, v in options.items() if k != "acknowledge"}  # nobody is left to hear PUBLISHED
        try:
            self.broker.check_options(caller, options)
        except (ValueError, wamp.ProtocolViolation) as e:
            raise MetaError(wamp.INVALID_ARGUMENT, f"publish_options: {e}")
        scope = _scope(kwargs)
        role = caller.authorizer
        if role is not None and not role.allows("publish", topic):
            # Checked now, because at publication time nobody is left to tell.
            raise MetaError(wamp.NOT_AUTHORIZED, f"role {caller.authrole!r} may not publish {wamp.quote(topic)}")
        mine = self._testaments.get(caller.id, {})
        if len(mine.get(scope, ())) >= MAX_TESTAMENTS:
            raise MetaError(TOO_MANY_TESTAMENTS, f"at most {MAX_TESTAMENTS} testaments per scope")
        size = approx_size((topic, event_args, event_kwargs, options), MAX_TESTAMENT_BYTES)
        if size + sum(t[4] for bucket in mine.values() for t in bucket) > MAX_TESTAMENT_BYTES:
            raise MetaError(TOO_MANY_TESTAMENTS, f"a session's testaments may hold at most {MAX_TESTAMENT_BYTES} bytes")
        self._testaments.setdefault(caller.id, {}).setdefault(scope, []).append(
            (topic, event_args, event_kwargs, options, size))
        self._testaments_changed(caller.id)

    def flush_testaments(self, caller: Session, args: list, kwargs: dict) -> None:
        scope = _scope(kwargs)
        mine = self._testaments.get(caller.id)
        if mine is not None:
            mine.pop(scope, None)
            if not mine:
                del self._testaments[caller.id]
            self._testaments_changed(caller.id)

    def testaments(self, session_id: int) -> int:
        """How many testaments a session holds (tests, operators)."""
        return sum(len(b) for b in self._testaments.get(session_id, {}).values())

    # -- wamp.registration.* ---------------------------------------------------------------------
    # The dealer's index holds the whole router's registrations (other nodes' callees as RemoteCallee).
    @property
    def _registry(self) -> Dealer:
        return self.dealer

    def _when_synced(self, answer: Callable[[], list]) -> Any:
        """The answer once this node has every registration made before the call (in a cluster one bus
        round trip, so a registration just confirmed on another node is seen; on one node at once)."""
        synced = self.dealer.backend.synced()
        if synced.called:
            return answer()
        return synced.addCallback(lambda _: answer())

    def _registration(self, args: list) -> Any:
        reg_id = _arg(args, 0, int, "registration")
        reg = self._registry.registration(reg_id)
        if reg is None:
            raise MetaError(wamp.NO_SUCH_REGISTRATION, f"no registration {reg_id}")
        return reg

    def registration_list(self, caller: Session, args: list, kwargs: dict) -> Any:
        def answer() -> list:
            lists: dict[str, list[int]] = {"exact": [], "prefix": [], "wildcard": []}
            for reg in self._registry.registrations():
                lists[reg.match].append(reg.id)
            return [lists]

        return self._when_synced(answer)

    def registration_lookup(self, caller: Session, args: list, kwargs: dict) -> Any:
        procedure = _uri_arg(args, 0, "procedure")
        match = _match_policy(args, 1)

        def answer() -> list:
            reg = self._registry.lookup(procedure, match)
            return [reg.id if reg is not None else None]

        return self._when_synced(answer)

    def registration_match(self, caller: Session, args: list, kwargs: dict) -> Any:
        procedure = _uri_arg(args, 0, "procedure")

        def answer() -> list:
            reg = self._registry.match(procedure)
            return [reg.id if reg is not None else None]

        return self._when_synced(answer)

    def registration_get(self, caller: Session, args: list, kwargs: dict) -> Any:
        return self._when_synced(lambda: [_registration_details(self._registration(args))])

    def registration_list_callees(self, caller: Session, args: list, kwargs: dict) -> Any:
        return self._when_synced(lambda: [_callee_ids(self._registration(args))])

    def registration_count_callees(self, caller: Session, args: list, kwargs: dict) -> Any:
        return self._when_synced(lambda: [len(self._registration(args).callees)])

    # -- wamp.subscription.* ---------------------------------------------------------------------
    # These answer for the whole router: the broker's backend knows the other nodes' subscriptions
    # (their ids are the same on every node) and asks those nodes for their subscribers.
    def _elsewhere(self, sub: Subscription) -> bool:
        return self.broker.backend.elsewhere(sub.topic, sub.match)

    def _subscription(self, args: list) -> Subscription:
        sub_id = _arg(args, 0, int, "subscription")
        sub = self.broker.subscription(sub_id)
        if sub is None:
            seen = self.broker.backend.others().get(sub_id)
            if seen is not None:  # another node's: its shape, without subscribers here
                sub = Subscription(sub_id, seen[1], seen[0])
                sub.created = seen[2]
        if sub is None or wamp.is_reserved(sub.topic):
            raise MetaError(wamp.NO_SUCH_SUBSCRIPTION, f"no subscription {sub_id}")
        return sub

    def subscription_list(self, caller: Session, args: list, kwargs: dict) -> list:
        lists: dict[str, list[int]] = {"exact": [], "prefix": [], "wildcard": []}
        for sub in self.broker.subscriptions():
            if not wamp.is_reserved(sub.topic):
                lists[sub.match].append(sub.id)
        for sub_id, (match, topic, _) in self.broker.backend.others().items():
            if self.broker.subscription(sub_id) is None and not wamp.is_reserved(topic):
                lists[match].append(sub_id)
        return [lists]

    def subscription_lookup(self, caller: Session, args: list, kwargs: dict) -> list:
        topic = _uri_arg(args, 0, "topic")
        match = _match_policy(args, 1)
        sub = self.broker.lookup(topic, match)
        if sub is None and self.broker.backend.elsewhere(topic, match):
            sub_id = self.broker.backend.id_for(topic, match)  # a backend with other places names ids
            sub = Subscription(sub_id, topic, match) if sub_id is not None else None
        return [sub.id if sub is not None and not wamp.is_reserved(sub.topic) else None]

    def subscription_match(self, caller: Session, args: list, kwargs: dict) -> list:
        """Every subscription an event to the topic would go to (exact, prefix, wildcard), or None."""
        topic = _uri_arg(args, 0, "topic")
        ids = [s.id for s in self.broker.matching(topic) if not wamp.is_reserved(s.topic)]
        if not wamp.is_reserved(topic):
            ids += [i for i in self.broker.backend.matching(topic) if i not in ids]
        return [ids or None]

    def subscription_get(self, caller: Session, args: list, kwargs: dict) -> list:
        return [_subscription_details(self._subscription(args))]

    def _subscribers(self, sub: Subscription) -> Any:
        """The subscription's subscriber ids: a list, or a Deferred of every node's when others have some."""
        here = list(sub.subscribers)
        if not self._elsewhere(sub):
            return here
        return self.broker.backend.subscribers(sub.topic, sub.match).addCallback(
            lambda there: here + [i for i in there if i not in here])

    def subscription_list_subscribers(self, caller: Session, args: list, kwargs: dict) -> Any:
        found = self._subscribers(self._subscription(args))
        return found.addCallback(lambda ids: [ids]) if isinstance(found, defer.Deferred) else [found]

    def subscription_count_subscribers(self, caller: Session, args: list, kwargs: dict) -> Any:
        found = self._subscribers(self._subscription(args))
        return found.addCallback(lambda ids: [len(ids)]) if isinstance(found, defer.Deferred) else [len(found)]


def _callee_ids(reg: Registration) -> list[int]:
    """A registration's callees' session ids, on every node."""
    return [c.session_id for c in reg.callees]


def _registration_details(reg: Any) -> dict:
    return {"id": reg.id, "created": _iso(reg.created), "uri": reg.procedure, "match": reg.match,
            "invoke": reg.invoke}


def _subscription_details(sub: Subscription) -> dict:
    return {"id": sub.id, "created": _iso(sub.created), "uri": sub.topic, "match": sub.match}
