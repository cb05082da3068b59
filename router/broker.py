"""The broker of one realm: SUBSCRIBE / UNSUBSCRIBE / PUBLISH → EVENT (WAMP Basic Profile), with the
Advanced Profile's pattern_based_subscription, subscriber_blackwhite_listing, publisher_exclusion,
publisher_identification, event_retention and payload_passthru_mode.

The hot path is a PUBLISH to an exact topic with basic options: one dict hit for its subscription, and
nothing else is looked at until a pattern subscription exists or the PUBLISH carries advanced options.
"""

from __future__ import annotations

import time
from typing import Protocol

from twisted.internet import defer
from twisted.logger import Logger

from router import lograte, wamp
from router.backend import BrokerBackend
from router.backend.local import LocalBroker
from router.matching import MATCH_POLICIES, PatternIndex
from router.session import Session

# Retained events kept per realm (event_retention), one per topic, in count and in (approximate) bytes.
# Past either bound, the topic retained longest ago is forgotten first: the spec asks for best effort,
# not storage.
MAX_RETAINED = 10_000
MAX_RETAINED_BYTES = 16 * 1024 * 1024
MAX_SUBSCRIPTIONS = 10_000  # per session (limits.max_subscriptions_per_session)
# PUBLISH options the Basic Profile path reads itself; any other key sends the PUBLISH through _advanced().
_BASIC_OPTIONS = frozenset({"acknowledge", "exclude_me", "disclose_me"})
# Why a publication did not reach the other nodes (the cluster's outbox causes) → the publisher's ERROR.
_UNSENT = {"too_large": (wamp.PAYLOAD_SIZE_EXCEEDED, "delivered on this node only: too large for the cluster's bus"),
           "unencodable": (wamp.INVALID_ARGUMENT, "delivered on this node only: a value cannot cross nodes"),
           "unavailable": ("courtyard.error.cluster_unavailable", "delivered on this node only: Redis is away"),
           "lost": ("courtyard.error.cluster_unavailable", "delivered on this node only: the other nodes are "
                                                           "not reachable")}


class Subscription:
    """One subscription per (topic, match policy) per realm, shared by all its subscribers (WAMP spec, SUBSCRIBE)."""

    __slots__ = ("id", "topic", "match", "subscribers", "created")

    def __init__(self, id: int, topic: str, match: str) -> None:
        self.id = id
        self.topic = topic
        self.match = match
        self.subscribers: dict[int, Session] = {}
        self.created = time.time()


class Receivers:
    """The publisher's black- and whitelists (subscriber_blackwhite_listing). A subscriber receives the
    event only if every list present admits it; an empty `eligible...` list admits nobody (spec)."""

    __slots__ = ("exclude", "eligible", "exclude_authid", "eligible_authid", "exclude_authrole", "eligible_authrole")

    def __init__(self, lists: dict[str, frozenset]) -> None:
        for key in self.__slots__:
            setattr(self, key, lists.get(key))

    def to_lists(self) -> dict[str, list]:
        """The lists present, as plain lists: how they cross to other nodes and into Redis."""
        return {k: list(v) for k in self.__slots__ if (v := getattr(self, k)) is not None}

    @classmethod
    def from_lists(cls, lists: dict | None) -> Receivers | None:
        """The inverse of `to_lists` (None for None); keys that are not lists are ignored."""
        if lists is None:
            return None
        return cls({k: frozenset(v) for k, v in lists.items() if k in cls.__slots__ and type(v) is list})

    def of(self, subscribers: dict[int, Session]) -> dict[int, Session]:
        return {sid: s for sid, s in subscribers.items() if self.admits(s)}

    def admits(self, s: Session) -> bool:
        return not (
            (self.eligible is not None and s.id not in self.eligible)
            or (self.exclude is not None and s.id in self.exclude)
            or (self.eligible_authid is not None and s.authid not in self.eligible_authid)
            or (self.exclude_authid is not None and s.authid in self.exclude_authid)
            or (self.eligible_authrole is not None and s.authrole not in self.eligible_authrole)
            or (self.exclude_authrole is not None and s.authrole in self.exclude_authrole)
        )


class Retained:
    """The last event published with `retain: true` on a topic, with who was allowed to receive it then:
    a later subscriber gets it only if it would have received it when it was published (spec)."""

    __slots__ = ("publication", "details", "payload", "exclude", "receivers", "size")

    def __init__(self, publication: int, details: dict, payload: list, exclude: int | None,
                 receivers: Receivers | None, size: int = 0) -> None:
        self.publication = publication
        self.details = details
        self.payload = payload
        self.exclude = exclude
        self.receivers = receivers
        self.size = size  # approximate bytes held, counted against the realm's max_retained_bytes

    def admits(self, s: Session) -> bool:
        return s.id != self.exclude and (self.receivers is None or self.receivers.admits(s))


class SubscriptionListener(Protocol):
    def subscribed(self, session_id: int, sub: Subscription, created: bool) -> None: ...

    def unsubscribed(self, session_id: int, sub: Subscription, deleted: bool) -> None: ...


class Broker:
    FEATURES: dict[str, bool] = {
        "publisher_identification": True,
        "publisher_exclusion": True,
        "pattern_based_subscription": True,
        "subscriber_blackwhite_listing": True,
        "event_retention": True,
        "payload_passthru_mode": True,
    }

    log = Logger()

    def __init__(self, realm_uri: str, max_retained_bytes: int = MAX_RETAINED_BYTES,
                 max_subscriptions: int = MAX_SUBSCRIPTIONS, backend: BrokerBackend | None = None) -> None:
        self.realm_uri = realm_uri
        self.max_retained_bytes = max_retained_bytes
        self.max_subscriptions = max_subscriptions  # per session: each holds its topic URI
        # Told of subscription changes (the meta API's on_create/on_subscribe/...); None: nobody asks.
        # Only SUBSCRIBE/UNSUBSCRIBE and session close look at it, never PUBLISH.
        self.listener: SubscriptionListener | None = None
        self._subs: PatternIndex[Subscription] = PatternIndex()
        self._exact = self._subs.exact  # topic → exact subscription: the hot path's one dict
        self._patterns = 0  # how many prefix/wildcard subscriptions exist; 0 keeps PUBLISH on the dict hit
        self._by_id: dict[int, Subscription] = {}
        self._by_session: dict[int, set[int]] = {}
        self._retained: dict[str, Retained] = {}  # insertion order: the oldest retained topic first
        self._retained_bytes = 0
        # The rest of the router (router/backend): the other nodes' subscribers in a cluster.
        self.backend: BrokerBackend = backend if backend is not None else LocalBroker()

    # -- requests --------------------------------------------------------------------------------
    def subscribe(self, session: Session, msg: list) -> None:
        request, options, topic = msg[1], msg[2], msg[3]
        send = session.transport.send
        match = options.get("match", "exact")
        get_retained = options.get("get_retained", False)
        if match not in MATCH_POLICIES:
            send(wamp.error(wamp.SUBSCRIBE, request, wamp.INVALID_ARGUMENT,
                            [f"match policy {wamp.quote(match)} is not one of {', '.join(MATCH_POLICIES)}"]))
            return
        if type(get_retained) is not bool:
            send(wamp.error(wamp.SUBSCRIBE, request, wamp.INVALID_ARGUMENT, ["get_retained must be a boolean"]))
            return
        if not valid_pattern(topic, match):
            send(wamp.error(wamp.SUBSCRIBE, request, wamp.INVALID_URI, [wamp.uri_refusal(f"{match} topic", topic)]))
            return
        sub = self._subs.get(topic, match)
        mine = self._by_session.get(session.id)
        if mine is not None and len(mine) >= self.max_subscriptions and (sub is None or sub.id not in mine):
            lograte.refused(self.log, "info", "too_many_subscriptions", session.id, "session {sid} refused a "
                            "subscription: it has {n} (limits.max_subscriptions_per_session)", sid=session.id,
                            n=len(mine))
            send(wamp.error(wamp.SUBSCRIBE, request, wamp.TOO_MANY_SUBSCRIPTIONS,
                            [f"this session has {len(mine)} subscriptions, the most it may have"]))
            return
        created = sub is None
        if created:
            sub = Subscription(self._new_id(topic, match), topic, match)
            self._subs.add(topic, match, sub)
            self._by_id[sub.id] = sub
            if match != "exact":
                self._patterns += 1
        added = session.id not in sub.subscribers
        self._by_session.setdefault(session.id, set()).add(sub.id)
        if created:
            # SUBSCRIBED once every other place knows: a PUBLISH the client then makes on another node
            # finds this subscription there (the local backend fires at once). Until then the session
            # is no subscriber yet: the spec sends EVENTs only for an acknowledged subscription.
            self.backend.created(topic, match).addBoth(lambda _: self._confirmed(session, request, sub, get_retained))
        else:
            sub.subscribers[session.id] = session
            self._subscribed(session, request, sub, get_retained)
        if added and self.listener is not None:
            self.listener.subscribed(session.id, sub, created)

    def _confirmed(self, session: Session, request: int, sub: Subscription, get_retained: bool) -> None:
        """The backend knows the new subscription: its first subscriber joins it, unless it left meanwhile."""
        if sub.id in self._by_session.get(session.id, ()) and self._by_id.get(sub.id) is sub:
            sub.subscribers[session.id] = session
            self._subscribed(session, request, sub, get_retained)

    def _subscribed(self, session: Session, request: int, sub: Subscription, get_retained: bool) -> None:
        session.transport.send([wamp.SUBSCRIBED, request, sub.id])
        if not get_retained:
            return
        shared = self.backend.retained_for(sub)
        if shared is not None:
            shared.addCallbacks(lambda found: self._send_found(session, sub, found),
                                lambda f: self._send_retained(session, sub))
        elif self._retained:
            self._send_retained(session, sub)

    def unsubscribe(self, session: Session, msg: list) -> None:
        request, sub_id = msg[1], msg[2]
        sub = self._by_id.get(sub_id)
        if sub is None or session.id not in sub.subscribers:
            session.transport.send(wamp.error(wamp.UNSUBSCRIBE, request, wamp.NO_SUCH_SUBSCRIPTION))
            return
        told = self._remove(session.id, sub)
        mine = self._by_session[session.id]
        mine.discard(sub_id)
        if not mine:
            del self._by_session[session.id]
        # UNSUBSCRIBED once every other place knows there is no subscriber here any more.
        told.addBoth(lambda _: session.transport.send([wamp.UNSUBSCRIBED, request]))

    def publish(self, session: Session, msg: list) -> None:
        request, options, topic = msg[1], msg[2], msg[3]
        acknowledge = options.get("acknowledge", False)
        sub = self._exact.get(topic)
        if (sub is None and not wamp.is_valid_uri(topic)) or wamp.is_reserved(topic):
            self._refuse(session, request, acknowledge, wamp.INVALID_URI, wamp.uri_refusal("topic", topic)
                         if wamp.too_long(topic) else f"invalid or reserved topic URI {wamp.quote(topic)}")
            return
        # Cheap tests first: {} and {"acknowledge": true} are most PUBLISHes.
        if options and (acknowledge is not True or len(options) > 1) and not _BASIC_OPTIONS.issuperset(options):
            self._publish_advanced(session, msg)
            return
        publication = wamp.global_id()
        if sub is not None or self._patterns:
            exclude = session.id if options.get("exclude_me", True) else None
            details = _publisher_details(session, options, topic)
            if self._patterns:
                self._fan_out(topic, publication, details, msg[4:], exclude, None)
            else:
                self.deliver(sub, [wamp.EVENT, sub.id, publication, details, *msg[4:]], exclude)
        backend = self.backend
        if backend.wants(topic):
            unsent = backend.forward(topic, publication, _publisher_details(session, options, topic), msg[4:], None,
                                     None)
            if unsent is not None:
                self._unsent(session, request, acknowledge, unsent)
                return
        if acknowledge:
            session.transport.send([wamp.PUBLISHED, request, publication])

    def _publish_advanced(self, session: Session, msg: list) -> None:
        """A PUBLISH with Advanced Profile options (black/whitelists, retain, ppt_*): kept off the hot path."""
        request, options, topic = msg[1], msg[2], msg[3]
        acknowledge = options.get("acknowledge", False)
        try:
            receivers, ppt, retain = self._advanced(session, options)
        except ValueError as e:
            self._refuse(session, request, acknowledge, wamp.INVALID_ARGUMENT, str(e))
            return
        publication = wamp.global_id()
        exclude = session.id if options.get("exclude_me", True) else None
        details = _publisher_details(session, options, topic)
        if ppt:
            details.update(ppt)
        payload = msg[4:]
        self._fan_out(topic, publication, details, payload, exclude, receivers)
        unsent = None
        if self.backend.wants(topic):
            unsent = self.backend.forward(topic, publication, details, payload, None, receivers)
        if retain:
            self._retain(session, topic, Retained(publication, details, payload, exclude, receivers,
                                                  approx_size((topic, options, payload), self.max_retained_bytes)))
        if unsent is not None:
            self._unsent(session, request, acknowledge, unsent)
        elif acknowledge:
            session.transport.send([wamp.PUBLISHED, request, publication])

    def emit(self, topic: str, args: list, kwargs: dict | None = None, details: dict | None = None) -> None:
        """Publish as the router (meta events, testaments): nobody is excluded. With no subscription
        matching `topic` this is two dict lookups."""
        remote = self.backend.wants(topic)
        if self._patterns or topic in self._exact or remote:
            publication, payload = wamp.global_id(), [args, kwargs] if kwargs else [args]
            self._fan_out(topic, publication, details or {}, payload, None, None)
            if remote:
                self.backend.forward(topic, publication, details or {}, payload, None, None)

    def deliver_remote(self, topic: str, publication: int, details: dict, payload: list, exclude: int | None,
                       lists: dict | None) -> None:
        """A publication from another node of the cluster, to this node's subscribers, with the
        publisher's exclusions and black/whitelists applied here."""
        self._fan_out(topic, publication, details, payload, exclude, Receivers.from_lists(lists))

    def _fan_out(self, topic: str, publication: int, details: dict, payload: list, exclude: int | None,
                 receivers: Receivers | None) -> None:
        """One EVENT per subscription matching `topic`; pattern subscriptions are told the topic (spec)."""
        if not self._patterns:
            sub = self._exact.get(topic)
            if sub is not None:
                self.deliver(sub, [wamp.EVENT, sub.id, publication, details, *payload], exclude, receivers)
            return
        for sub in self._subs.matches(topic):
            self.deliver(sub, [wamp.EVENT, sub.id, publication,
                               details if sub.match == "exact" else {**details, "topic": topic}, *payload],
                         exclude, receivers)

    def _advanced(self, session: Session, options: dict) -> tuple[Receivers | None, dict | None, bool]:
        """The Advanced Profile's PUBLISH options: (black/whitelists, ppt details, retain). ValueError
        says which option is bad; a passthru PUBLISH from a publisher that did not announce
        payload_passthru_mode breaks the protocol (spec: ABORT wamp.error.protocol_violation)."""
        lists: dict[str, frozenset] = {}
        for key in Receivers.__slots__:
            value = options.get(key)
            if value is None:
                continue
            kind = int if key in ("exclude", "eligible") else str
            if type(value) is not list or not all(type(v) is kind for v in value):
                raise ValueError(f"{key} must be a list of {'session ids' if kind is int else 'strings'}")
            lists[key] = frozenset(value)
        retain = options.get("retain", False)
        if type(retain) is not bool:
            raise ValueError("retain must be a boolean")
        ppt = {key: options[key] for key in wamp.PPT_KEYS if key in options} or None
        if ppt:
            if "ppt_scheme" not in ppt:
                raise ValueError("ppt_serializer, ppt_cipher and ppt_keyid need ppt_scheme")
            for key, value in ppt.items():
                if type(value) is not str or (key == "ppt_scheme" and not value):
                    raise ValueError(f"{key} must be a{' non-empty' if key == 'ppt_scheme' else ''} string")
            if not session.announces("publisher", "payload_passthru_mode"):
                raise wamp.ProtocolViolation("PUBLISH with ppt_scheme from a publisher that did not announce "
                                             "payload_passthru_mode")
        return (Receivers(lists) if lists else None), ppt, retain

    def check_options(self, session: Session, options: dict) -> None:
        """Raise ValueError (or ProtocolViolation) for PUBLISH options this broker would refuse."""
        self._advanced(session, options)

    def _unsent(self, session: Session, request: int, acknowledge: bool, cause: str) -> None:
        """Delivered here but not to every other node: an acknowledged PUBLISH gets an ERROR (not
        PUBLISHED) saying why (cluster/outbox.py's causes), so its publisher learns the event is partial."""
        if acknowledge:
            uri, why = _UNSENT.get(cause, _UNSENT["lost"])
            session.transport.send(wamp.error(wamp.PUBLISH, request, uri, [why]))

    def _refuse(self, session: Session, request: int, acknowledge: bool, uri: str, why: str) -> None:
        """A PUBLISH that is not delivered: ERROR if acknowledged, else nothing — an ERROR for an
        unacknowledged PUBLISH would answer a request the client forgot. Logged either way."""
        lograte.refused(self.log, "info", f"publish {uri}", session.id, "PUBLISH {request} from session {sid} refused: "
                        "{why}", request=request, sid=session.id, why=why)
        if acknowledge:
            session.transport.send(wamp.error(wamp.PUBLISH, request, uri, [why]))

    # -- event retention -------------------------------------------------------------------------
    def _retain(self, session: Session, topic: str, event: Retained) -> None:
        """Keep the topic's latest retained event, forgetting the oldest topics while the realm's
        bounds are exceeded; an event larger than the whole byte budget is delivered, not retained
        (and the topic's older one is forgotten: it is no longer the latest)."""
        store = self._retained
        old = store.pop(topic, None)
        if old is not None:
            self._retained_bytes -= old.size
        if event.size > self.max_retained_bytes:
            lograte.refused(self.log, "info", "not_retained", session.id, "PUBLISH from session {sid} not retained: "
                            "about {size} bytes, over the realm's {max}", sid=session.id, size=event.size,
                            max=self.max_retained_bytes)
            return
        while store and (len(store) >= MAX_RETAINED or self._retained_bytes + event.size > self.max_retained_bytes):
            self._retained_bytes -= store.pop(next(iter(store))).size
        store[topic] = event  # re-inserted: the most recently retained topic is last
        self._retained_bytes += event.size
        self.backend.retain(topic, event, self.max_retained_bytes, MAX_RETAINED)  # for other nodes' subscribers

    def _send_retained(self, session: Session, sub: Subscription) -> None:
        """After SUBSCRIBED: the retained event of every topic the subscription matches, if the session
        may have it, marked `retained`."""
        if sub.match == "exact":
            event = self._retained.get(sub.topic)
            found = [(sub.topic, event)] if event is not None else []
        else:
            found = [(t, e) for t, e in self._retained.items() if pattern_matches(sub.topic, sub.match, t)]
        self._send_found(session, sub, found)

    @staticmethod
    def _send_found(session: Session, sub: Subscription, found: list[tuple[str, Retained]]) -> None:
        transport = session.transport
        for topic, event in found:
            if event.admits(session):
                details = {**event.details, "retained": True}
                if sub.match != "exact":
                    details["topic"] = topic
                frame = _prepare(transport.codec, [wamp.EVENT, sub.id, event.publication, details, *event.payload],
                                 topic)
                if frame is not None:
                    transport.send_prepared(frame)

    # -- fan-out ---------------------------------------------------------------------------------
    @staticmethod
    def deliver(sub: Subscription, event: list, exclude: int | None, receivers: Receivers | None = None) -> None:
        """Send one EVENT to every subscriber (but `exclude`, and those `receivers` do not admit),
        serialized once per codec (serializer × transport kind)."""
        prepared: dict = {}
        too_big = 0
        for sid, subscriber in (sub.subscribers if receivers is None else receivers.of(sub.subscribers)).items():
            if sid == exclude:
                continue
            transport = subscriber.transport
            codec = transport.codec
            frame = prepared.get(codec, _UNPREPARED)
            if frame is _UNPREPARED:
                frame = prepared[codec] = _prepare(codec, event, sub.topic)
            if frame is not None:
                refused = transport.send_prepared(frame)
                if refused is not None and refused == wamp.PAYLOAD_SIZE_EXCEEDED:
                    too_big += 1
        if too_big:
            lograte.refused(Broker.log, "info", "event_too_large", sub.topic, "EVENT on {topic} is larger than {n} "
                            "subscribers take; they miss it", topic=wamp.quote(sub.topic), n=too_big)

    # -- session lifetime ------------------------------------------------------------------------
    def detach(self, session: Session) -> None:
        for sub_id in self._by_session.pop(session.id, ()):
            sub = self._by_id.get(sub_id)
            if sub is not None:
                self._remove(session.id, sub)

    def _remove(self, session_id: int, sub: Subscription) -> defer.Deferred:
        """Fires once every other place knows (at once while the subscription keeps subscribers here)."""
        sub.subscribers.pop(session_id, None)  # (not there yet if its SUBSCRIBED is still waiting)
        deleted = not sub.subscribers
        told = defer.succeed(None)
        if deleted:
            self._subs.remove(sub.topic, sub.match)
            del self._by_id[sub.id]
            if sub.match != "exact":
                self._patterns -= 1
            told = self.backend.deleted(sub.topic, sub.match)
        if self.listener is not None:
            self.listener.unsubscribed(session_id, sub, deleted)
        return told

    def _new_id(self, topic: str, match: str) -> int:
        """The backend's router-wide id (the same on every node of a cluster), else random."""
        sub_id = self.backend.id_for(topic, match)
        if sub_id is not None and sub_id not in self._by_id:
            return sub_id
        while True:
            sub_id = wamp.global_id()
            if sub_id not in self._by_id:
                return sub_id

    # -- introspection (meta API, tests) ---------------------------------------------------------
    def subscriptions(self) -> list[Subscription]:
        return list(self._by_id.values())

    def subscription(self, sub_id: int) -> Subscription | None:
        return self._by_id.get(sub_id)

    def lookup(self, topic: str, match: str = "exact") -> Subscription | None:
        """The subscription for exactly this topic and match policy."""
        return self._subs.get(topic, match)

    def matching(self, topic: str) -> list[Subscription]:
        """Every subscription an EVENT for `topic` would go to."""
        return list(self._subs.matches(topic))

    def retained(self) -> int:
        """How many topics have a retained event (tests, operators)."""
        return len(self._retained)

    def retained_bytes(self) -> int:
        """The approximate bytes retained events hold (tests, operators)."""
        return self._retained_bytes

    def size(self) -> int:
        return len(self._by_id)


_UNPREPARED = object()


def _prepare(codec, event: list, topic: str):
    """The EVENT framed for one kind of subscriber, or None when its serializer cannot carry the payload
    (NaN for JSON, 2^64 for msgpack): those subscribers miss it, the others get it."""
    try:
        return codec.prepare(event)
    except Exception as e:
        lograte.refused(Broker.log, "info", f"event_unencodable {codec.serializer.name}", topic,
                        "EVENT on {topic} cannot be written in {serializer}: {why}; its subscribers of that kind miss "
                        "it", topic=wamp.quote(topic), serializer=codec.serializer.name, why=wamp.quote(str(e)))
        return None


def valid_pattern(topic: object, match: str) -> bool:
    """A SUBSCRIBE topic under its match policy (WAMP spec, URIs): exact, a valid URI; prefix, a prefix
    of some valid URI ("" and a trailing dot included); wildcard, a URI whose components may be empty."""
    if match == "exact":
        return wamp.is_valid_uri(topic)
    if match == "prefix":
        return type(topic) is str and (topic == "" or wamp.is_valid_uri(topic[:-1] if topic.endswith(".") else topic))
    return wamp.is_valid_pattern(topic, match)


def pattern_matches(pattern: str, match: str, topic: str) -> bool:
    """Whether one pattern subscription matches a topic (the index does this for many at once)."""
    if match == "exact":
        return pattern == topic
    if match == "prefix":
        return topic.startswith(pattern)
    parts, wanted = topic.split("."), pattern.split(".")
    return len(parts) == len(wanted) and all(w == "" or w == p for w, p in zip(wanted, parts, strict=True))


def approx_size(value: object, limit: int) -> int:
    """Roughly the bytes a decoded value holds in memory (CPython's object sizes, rounded down), counted
    without recursion; the count stops once it passes `limit`, so shared references or deep nesting
    cannot make it expensive."""
    total, stack = 0, [value]
    while stack and total <= limit:
        v = stack.pop()
        t = type(v)
        if t is str or t is bytes:
            total += 40 + len(v)
        elif t is list or t is tuple:
            total += 56 + 8 * len(v)
            stack.extend(v)
        elif t is dict:
            total += 64 + 40 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            total += 32
    return total


def _publisher_details(session: Session, options: dict, topic: str) -> dict:
    """EVENT details naming the publisher when it asked (disclose_me) or its role must (publisher_identification)."""
    role = session.authorizer
    if options.get("disclose_me") or (role is not None and role.allows("publisher", topic)):
        return {"publisher": session.id, "publisher_authid": session.authid, "publisher_authrole": session.authrole}
    return {}
