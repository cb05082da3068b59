"""Session storage backends behind the tuplespace API. `memory` is the embedded default."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from router.session import Session


class SessionStorage(Protocol):
    """What the session table needs from a backend. All calls are synchronous and cheap."""

    def insert(self, session: Session) -> bool:
        """Store a new record; False when its id is taken."""

    def remove(self, session_id: int) -> Session | None: ...

    def get(self, session_id: int) -> Session | None: ...

    def count(self, realm_uri: str | None = None) -> int: ...

    def select(self, realm_uri: str | None = None, authid: str | None = None,
               authrole: str | None = None) -> Iterable[Session]: ...

    def changed(self, session: Session, old: dict) -> None:
        """After `update` changed a record (`old` holds the previous values), so indexes can follow."""


def create(config: dict) -> SessionStorage:
    backend = config.get("backend", "memory")
    if backend == "memory":
        from router.storage.memory import MemoryStorage

        return MemoryStorage()
    raise ValueError(f"unknown storage backend {backend!r}")
