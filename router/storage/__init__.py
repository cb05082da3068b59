"""Session storage backends behind the tuplespace API. `memory` is the embedded default; `redis`
(a cluster) keeps the node's records in memory too and mirrors them to Redis."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

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

    def testaments_changed(self, session_id: int, testaments: dict | None) -> None:
        """A session's testaments changed (None: it has none left)."""

    # Cluster-wide reads, answered later (Deferreds): on one node at once, in a cluster from Redis.
    clustered: bool  # True: the cluster_* reads see every node's sessions (Redis)

    def cluster_count(self, realm_uri: str | None = None, authrole: str | None = None) -> Any: ...

    def cluster_select(self, realm_uri: str | None = None, authid: str | None = None,
                       authrole: str | None = None) -> Any: ...

    def cluster_details(self, session_id: int) -> Any: ...


def create(config: dict, cluster: Any = None) -> SessionStorage:
    """The configured backend; `cluster` (a ClusterConfig) for `redis`, which is imported only then."""
    backend = config.get("backend", "memory")
    if backend == "memory":
        from router.storage.memory import MemoryStorage

        return MemoryStorage()
    if backend == "redis":
        from router.storage.redis import RedisStorage

        return RedisStorage(cluster.node_id, cluster.activity_interval)
    raise ValueError(f"unknown storage backend {backend!r}")
