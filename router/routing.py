"""A running realm: owns its broker and dealer and routes established sessions' messages to them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from realms.realm import Realm
from router import wamp
from router.broker import MAX_RETAINED_BYTES, MAX_SUBSCRIPTIONS, Broker
from router.dealer import MAX_REGISTRATIONS, Dealer
from router.meta import BROKER_FEATURES, DEALER_FEATURES, Meta
from router.metrics import TopCounter
from router.session import Session

if TYPE_CHECKING:
    from router.tuplespace import SessionTable


class RealmRouter:
    log = Logger()

    def __init__(self, spec: Realm, max_pending_calls: int | None = None, table: SessionTable | None = None,
                 max_retained_bytes: int = MAX_RETAINED_BYTES, max_subscriptions: int = MAX_SUBSCRIPTIONS,
                 max_registrations: int = MAX_REGISTRATIONS) -> None:
        self.uri = spec.uri
        self.spec = spec
        self.broker = Broker(spec.uri, max_retained_bytes, max_subscriptions)
        self.dealer = Dealer(spec.uri, max_pending_calls, max_registrations=max_registrations)
        self.meta = Meta(spec.uri, self.broker, self.dealer, table)
        self.processes = None  # router.processes.Processes, where session processes are served
        # For /metrics and the status page (router.metrics): plain counters, read at scrape time.
        self.calls = TopCounter()  # CALLs accepted, per procedure
        self.publications = TopCounter()  # PUBLISHes accepted, per topic
        self.events_delivered = 0  # EVENTs written (WampProtocol.send_prepared)
        self.dealer.calls_routed = 0  # INVOCATIONs sent (Dealer.call)
        self.tops = {wamp.CALL: self.calls, wamp.PUBLISH: self.publications}  # counted by WampProtocol
        self._roles = {"broker": {"features": {**self.broker.FEATURES, **BROKER_FEATURES}},
                       "dealer": {"features": {**self.dealer.FEATURES, **DEALER_FEATURES}}}
        self.handlers = {
            wamp.PUBLISH: self.broker.publish,
            wamp.SUBSCRIBE: self.broker.subscribe,
            wamp.UNSUBSCRIBE: self.broker.unsubscribe,
            wamp.CALL: self.dealer.call,
            wamp.REGISTER: self.dealer.register,
            wamp.UNREGISTER: self.dealer.unregister,
            wamp.YIELD: self.dealer.yield_,
            wamp.ERROR: self.dealer.error,
            wamp.CANCEL: self.dealer.cancel,
        }

    def roles(self) -> dict:
        """The WELCOME.Details.roles this realm announces: only features that work (built once, shared)."""
        return self._roles

    def attach(self, session: Session) -> None:
        """A session joined (WELCOME sent): wamp.session.on_join, then its process (start: on_join)."""
        self.meta.joined(session)
        if self.processes is not None:
            self.processes.joined(session)

    def detach(self, session: Session) -> None:
        """A session left, whatever the cause: nothing of it may stay behind; then its testaments
        and wamp.session.on_leave."""
        self.broker.detach(session)
        self.dealer.detach(session)
        self.meta.left(session)
