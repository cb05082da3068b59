"""What a piece of cluster routing state (which node has which subscriptions, which callees) is told
by the node: the pieces stay independent of each other and of the node's wiring."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import defer


class ClusterPart(Protocol):
    def start(self) -> defer.Deferred:
        """After the bus is up, before the node listens: read the other nodes' state from Redis."""

    def realm_started(self, router: Any) -> None:
        """A realm starts running on this node (a RealmRouter): hook its broker or dealer."""

    def node_down(self, node_id: str) -> None:
        """Another node is gone (dead, or stopped): forget its state, fail what waited on it.
        May be told more than once for one node."""

    def resync(self) -> None:
        """Redis is back after an outage, or this node was taken for dead: write this node's state
        again and re-read the others' (idempotent)."""

    def stop(self) -> defer.Deferred:
        """Graceful stop, before the node's key goes: remove this node's state from Redis."""
