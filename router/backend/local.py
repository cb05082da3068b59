"""The one-node backend: nobody beyond this broker and dealer. Always installed at construction, so the
routing core never tests for a cluster; every answer is immediate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from router.backend import RemoteCallee
from router.session import Session


def _fired(value: Any = None) -> defer.Deferred:
    return defer.succeed(value)


class LocalBroker:
    """No other node: nothing wants a publication, every change is known everywhere at once."""

    def wants(self, topic: str) -> bool:
        return False

    def forward(self, topic: str, publication: int, details: dict, payload: list, exclude: int | None,
                receivers: Any) -> str | None:
        """Nobody to forward to."""
        return None

    def id_for(self, topic: str, match: str) -> int | None:
        return None

    def created(self, topic: str, match: str) -> defer.Deferred:
        return _fired()

    def deleted(self, topic: str, match: str) -> defer.Deferred:
        return _fired()

    def elsewhere(self, topic: str, match: str) -> bool:
        return False

    def others(self) -> dict[int, tuple[str, str, float]]:
        return {}

    def matching(self, topic: str) -> list[int]:
        return []

    def subscribers(self, topic: str, match: str) -> defer.Deferred:
        return _fired([])

    def retain(self, topic: str, event: Any, max_bytes: int, max_count: int) -> None:
        """The broker's own store is the only one."""

    def retained_for(self, sub: Any) -> defer.Deferred | None:
        return None


class LocalDealer:
    """No other node: a REGISTER is agreed by the dealer's own checks, at once."""

    def register(self, session: Session, procedure: str, match: str, invoke: str, reg_id: int,
                 new: bool) -> defer.Deferred:
        return _fired((reg_id, new))

    def registered(self, session: Session, procedure: str, match: str) -> None:
        """The dealer's own order is the only one."""

    def unregister(self, session: Session, procedure: str, match: str, last_here: bool) -> defer.Deferred:
        return _fired(last_here)

    def registering(self, session_id: int) -> int:
        return 0

    def forward(self, call: Any, msg: list, procedure: str, match: str, callee: RemoteCallee) -> None:
        raise AssertionError("a one-node dealer has no remote callees")

    def forward_more(self, call: Any, msg: list) -> None:
        raise AssertionError("a one-node dealer forwards no calls")

    def cancel(self, call: Any, msg: list) -> None:
        raise AssertionError("a one-node dealer forwards no calls")

    def caller_left(self, call: Any) -> None:
        raise AssertionError("a one-node dealer forwards no calls")

    def catch_up(self, session: Session, msg: list, then: Callable[[], None]) -> bool:
        return False

    def synced(self) -> defer.Deferred:
        return _fired()
