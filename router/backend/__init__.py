"""The seam under the routing core: what a realm's broker and dealer need from "the rest of the router".

Broker, dealer and meta are written once, against these two interfaces, and never ask whether there is a
cluster. `router/backend/local.py` is the one-node implementation, always installed at construction; a
cluster node replaces it per realm with the Redis one (`router/cluster/pubsub.py`, `router/cluster/rpc.py`)
before the realm routes its first message. The shape follows Centrifuge's `Broker`/`PresenceManager`
(an interface with a memory implementation always set) and Bondy's registry, where a remote node is just
another destination of a match.

Hot-path rule: a PUBLISH asks `wants(topic)` once; a CALL asks nothing unless it misses or its picked callee
is a `RemoteCallee`. Everything else (SUBSCRIBE, REGISTER, their undo, meta) may wait on a Deferred, which
the local backend fires at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer

if TYPE_CHECKING:
    from router.session import Session


class RemoteCallee:
    """A callee of a shared registration that lives on another node: where the dealer forwards a CALL."""

    __slots__ = ("node", "session_id")
    remote = True

    def __init__(self, node: str, session_id: int) -> None:
        self.node = node
        self.session_id = session_id

    def __eq__(self, other: object) -> bool:
        return type(other) is RemoteCallee and other.node == self.node and other.session_id == self.session_id

    def __hash__(self) -> int:
        return hash((self.node, self.session_id))


class BrokerBackend(Protocol):
    """Where one realm's subscriptions meet the rest of the router (the other nodes' subscribers)."""

    def wants(self, topic: str) -> bool:
        """Whether anyone beyond this broker has a subscription matching `topic` (one dict hit)."""

    def forward(self, topic: str, publication: int, details: dict, payload: list, exclude: int | None,
                receivers: Any) -> str | None:
        """Hand the publication to every other place with matching subscribers, once per place. None: on
        its way; else why it could not leave (cluster/outbox.py's causes: the broker tells a publisher
        that asked for acknowledge)."""

    def id_for(self, topic: str, match: str) -> int | None:
        """The router-wide id of a new subscription, or None for a fresh random one."""

    def created(self, topic: str, match: str) -> defer.Deferred:
        """A subscription got its first subscriber here: fires once every other place knows."""

    def deleted(self, topic: str, match: str) -> defer.Deferred:
        """A subscription lost its last subscriber here: fires once every other place knows."""

    def elsewhere(self, topic: str, match: str) -> bool:
        """Whether another place has subscribers for exactly this subscription."""

    def others(self) -> dict[int, tuple[str, str, float]]:
        """The other places' subscriptions: id → (match, topic, first seen)."""

    def matching(self, topic: str) -> list[int]:
        """Ids of the other places' subscriptions an event to `topic` goes to."""

    def subscribers(self, topic: str, match: str) -> defer.Deferred:
        """Deferred[list[int]]: the subscriber session ids the other places have for this subscription."""

    def retain(self, topic: str, event: Any, max_bytes: int, max_count: int) -> None:
        """Keep a retained event where every place's subscribers can get it."""

    def retained_for(self, sub: Any) -> defer.Deferred | None:
        """Deferred[[(topic, Retained)]] for a new subscription; None: this broker's own store is the truth."""


class DealerBackend(Protocol):
    """Where one realm's registrations are agreed and where calls to other places' callees go."""

    def register(self, session: Session, procedure: str, match: str, invoke: str, reg_id: int,
                 new: bool) -> defer.Deferred:
        """Agree a REGISTER (`reg_id`, `new`: what this node's index knows): Deferred[(registration id,
        created router-wide)]; fails with a WampError
        (procedure_already_exists, ..., courtyard.error.cluster_unavailable)."""

    def registered(self, session: Session, procedure: str, match: str) -> None:
        """The session is now a routable callee here (REGISTERED was sent): the backend refreshes the
        registration's callee order from its own record."""

    def unregister(self, session: Session, procedure: str, match: str, last_here: bool) -> defer.Deferred:
        """The session is no callee of (procedure, match) any more: Deferred[deleted router-wide] that
        fires once every other place has applied it."""

    def registering(self, session_id: int) -> int:
        """REGISTERs of the session still being agreed (they count toward its limit)."""

    def forward(self, call: Any, msg: list, procedure: str, match: str, callee: RemoteCallee) -> None:
        """Send the CALL to the callee's place; `call` (dealer.RemoteCall) is in the caller's table already,
        so a failure heard at once can end it."""

    def forward_more(self, call: Any, msg: list) -> None:
        """A further progressive CALL of a forwarded call."""

    def cancel(self, call: Any, msg: list) -> None:
        """CANCEL of a forwarded call."""

    def caller_left(self, call: Any) -> None:
        """The caller of a forwarded call left."""

    def catch_up(self, session: Session, msg: list, then: Callable[[], None]) -> bool:
        """A CALL missed: True if `then()` will run once this place has every registration made before
        now (so a miss is only answered no_such_procedure after that); False: answer now."""

    def synced(self) -> defer.Deferred:
        """Fires once this place has every registration made before now (meta answers then)."""
