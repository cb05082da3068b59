"""The broker of one realm: SUBSCRIBE / UNSUBSCRIBE / PUBLISH → EVENT (WAMP Basic Profile)."""

from __future__ import annotations

import time
from typing import Protocol

from twisted.logger import Logger

from router import wamp
from router.session import Session


class Subscription:
    """One subscription per topic per realm, shared by all its subscribers (WAMP spec, SUBSCRIBE)."""

    __slots__ = ("id", "topic", "match", "subscribers", "created")

    def __init__(self, id: int, topic: str, match: str) -> None:
        self.id = id
        self.topic = topic
        self.match = match
        self.subscribers: dict[int, Session] = {}
        self.created = time.time()


class SubscriptionListener(Protocol):
    def subscribed(self, session_id: int, sub: Subscription, created: bool) -> None: ...

    def unsubscribed(self, session_id: int, sub: Subscription, deleted: bool) -> None: ...


class Broker:
    FEATURES: dict[str, bool] = {"publisher_identification": True, "publisher_exclusion": True}

    log = Logger()

    def __init__(self, realm_uri: str) -> None:
        self.realm_uri = realm_uri
        # Told of subscription changes (the meta API's on_create/on_subscribe/...); None: nobody asks.
        # Only SUBSCRIBE/UNSUBSCRIBE and session close look at it, never PUBLISH.
        self.listener: SubscriptionListener | None = None
        self._by_topic: dict[str, Subscription] = {}
        self._by_id: dict[int, Subscription] = {}
        self._by_session: dict[int, set[int]] = {}

    # -- requests --------------------------------------------------------------------------------
    def subscribe(self, session: Session, msg: list) -> None:
        request, options, topic = msg[1], msg[2], msg[3]
        match = options.get("match", "exact")
        if match != "exact":
            session.transport.send(wamp.error(wamp.SUBSCRIBE, request, wamp.INVALID_ARGUMENT,
                                              [f"match policy {match!r} is not supported"]))
            return
        if not wamp.is_valid_uri(topic):
            session.transport.send(wamp.error(wamp.SUBSCRIBE, request, wamp.INVALID_URI,
                                              [f"invalid topic URI {topic!r}"]))
            return
        sub = self._by_topic.get(topic)
        created = sub is None
        if created:
            sub = Subscription(self._new_id(), topic, match)
            self._by_topic[topic] = sub
            self._by_id[sub.id] = sub
        added = session.id not in sub.subscribers
        sub.subscribers[session.id] = session
        self._by_session.setdefault(session.id, set()).add(sub.id)
        session.transport.send([wamp.SUBSCRIBED, request, sub.id])
        if added and self.listener is not None:
            self.listener.subscribed(session.id, sub, created)

    def unsubscribe(self, session: Session, msg: list) -> None:
        request, sub_id = msg[1], msg[2]
        sub = self._by_id.get(sub_id)
        if sub is None or session.id not in sub.subscribers:
            session.transport.send(wamp.error(wamp.UNSUBSCRIBE, request, wamp.NO_SUCH_SUBSCRIPTION))
            return
        self._remove(session.id, sub)
        mine = self._by_session[session.id]
        mine.discard(sub_id)
        if not mine:
            del self._by_session[session.id]
        session.transport.send([wamp.UNSUBSCRIBED, request])

    def publish(self, session: Session, msg: list) -> None:
        request, options, topic = msg[1], msg[2], msg[3]
        sub = self._by_topic.get(topic)
        acknowledge = options.get("acknowledge", False)
        if (sub is None and not wamp.is_valid_uri(topic)) or wamp.is_reserved(topic):
            # An ERROR for an unacknowledged PUBLISH would be an answer to a request the client forgot.
            if acknowledge:
                session.transport.send(wamp.error(wamp.PUBLISH, request, wamp.INVALID_URI,
                                                  [f"invalid or reserved topic URI {topic!r}"]))
            return
        publication = wamp.global_id()
        if sub is not None:
            exclude = session.id if options.get("exclude_me", True) else None
            role = session.authorizer
            if options.get("disclose_me") or (role is not None and role.allows("publisher", topic)):
                details = {"publisher": session.id, "publisher_authid": session.authid,
                           "publisher_authrole": session.authrole}
            else:
                details = {}
            self.deliver(sub, [wamp.EVENT, sub.id, publication, details, *msg[4:]], exclude)
        if acknowledge:
            session.transport.send([wamp.PUBLISHED, request, publication])

    # -- fan-out ---------------------------------------------------------------------------------
    @staticmethod
    def deliver(sub: Subscription, event: list, exclude: int | None) -> None:
        """Send one EVENT to every subscriber, serialized once per codec (serializer × transport kind)."""
        prepared: dict = {}
        for sid, subscriber in sub.subscribers.items():
            if sid == exclude:
                continue
            transport = subscriber.transport
            codec = transport.codec
            frame = prepared.get(codec)
            if frame is None:
                frame = prepared[codec] = codec.prepare(event)
            transport.send_prepared(frame)

    # -- session lifetime ------------------------------------------------------------------------
    def detach(self, session: Session) -> None:
        for sub_id in self._by_session.pop(session.id, ()):
            sub = self._by_id.get(sub_id)
            if sub is not None:
                self._remove(session.id, sub)

    def _remove(self, session_id: int, sub: Subscription) -> None:
        del sub.subscribers[session_id]
        deleted = not sub.subscribers
        if deleted:
            del self._by_topic[sub.topic]
            del self._by_id[sub.id]
        if self.listener is not None:
            self.listener.unsubscribed(session_id, sub, deleted)

    def _new_id(self) -> int:
        while True:
            sub_id = wamp.global_id()
            if sub_id not in self._by_id:
                return sub_id

    # -- introspection (meta API, tests) ---------------------------------------------------------
    def subscriptions(self) -> list[Subscription]:
        return list(self._by_id.values())

    def subscription(self, sub_id: int) -> Subscription | None:
        return self._by_id.get(sub_id)

    def lookup(self, topic: str) -> Subscription | None:
        return self._by_topic.get(topic)

    def size(self) -> int:
        return len(self._by_id)
