"""What the node counts for operators: /metrics (Prometheus text format, router/prometheus.py) and the
status page's /status.json.

The hot path only increments plain ints, lists and dicts held by the node and its realms (a
prometheus_client Counter.inc() takes a lock and costs ~10x more); a custom Collector turns them into
metric families when Prometheus scrapes. Every table keyed by client data is bounded in count and bytes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from router import wamp

if TYPE_CHECKING:
    from realms.registry import RealmRegistry
    from router.tuplespace import SessionTable


class _RunningRealm(Protocol):
    """What the counts read of a running realm (router.routing.RealmRouter; routing imports this
    module for TopCounter, so the type is declared here rather than imported back)."""

    @property
    def calls(self) -> TopCounter: ...

    @property
    def publications(self) -> TopCounter: ...

    @property
    def events_delivered(self) -> int: ...

    @property
    def dealer(self) -> Any: ...  # its Dealer: pending(), calls_routed


class _Identity(Protocol):
    """What the status data reads of the node's config."""

    @property
    def name(self) -> str: ...

    @property
    def cluster(self) -> Any: ...  # its ClusterConfig (for `node_id`), None on one node


class MetricsSource(Protocol):
    """What the status page's data and the Prometheus collector read of a node (router.node.Node is
    one): its counters, sessions, realms and running realms, connections, and whether it is stopping."""

    @property
    def stats(self) -> Stats: ...

    @property
    def table(self) -> SessionTable: ...

    @property
    def realms(self) -> RealmRegistry: ...

    @property
    def config(self) -> _Identity: ...

    @property
    def connections(self) -> int: ...

    @property
    def stopping(self) -> bool: ...

    def realm_routers(self) -> Mapping[str, _RunningRealm]: ...

OTHER = "(other)"  # the label of whatever did not fit in a bounded table
MAX_ERROR_URIS = 200  # distinct error URIs counted by name (callees may make up their own)
RECENT_REFUSALS = 50  # kept for the status page


class TopCounter:
    """Counts per URI (procedures called, topics published to), at most `max_keys` URIs and `max_bytes` of
    them; the rest are counted together as `other`. One dict lookup per hit."""

    __slots__ = ("counts", "other", "_bytes", "max_keys", "max_bytes")

    def __init__(self, max_keys: int = 1000, max_bytes: int = 256 * 1024) -> None:
        self.counts: dict[str, int] = {}
        self.other = 0
        self._bytes = 0
        self.max_keys = max_keys
        self.max_bytes = max_bytes

    def hit(self, key: str) -> None:
        counts = self.counts
        n = counts.get(key)
        if n is not None:
            counts[key] = n + 1
        elif len(counts) < self.max_keys and self._bytes + len(key) <= self.max_bytes:
            counts[key] = 1
            self._bytes += len(key)
        else:
            self.other += 1

    def total(self) -> int:
        return sum(self.counts.values()) + self.other

    def top(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class Stats:
    """The node's counters. `msgs_in`/`msgs_out` are indexed by WAMP message code."""

    __slots__ = ("msgs_in", "msgs_out", "errors", "auth", "refusals", "recent", "slow_drops", "slow_disconnects",
                 "started")

    def __init__(self) -> None:
        self.msgs_in = [0] * 128
        self.msgs_out = [0] * 128
        self.errors = TopCounter(MAX_ERROR_URIS, 32 * 1024)  # ERROR and ABORT sent, by URI
        self.auth: dict[tuple[str, str], int] = {}  # (method, "success" | "failure") -> count
        self.refusals: dict[tuple[str, str], int] = {}  # (realm, reason) -> count
        self.recent: deque[dict] = deque(maxlen=RECENT_REFUSALS)
        self.slow_drops = 0  # bulk messages refused to peers past their outgoing budget
        self.slow_disconnects = 0  # peers disconnected for reading too slowly
        self.started = time.time()

    def authenticated(self, method: str, ok: bool) -> None:
        key = (method, "success" if ok else "failure")
        self.auth[key] = self.auth.get(key, 0) + 1

    def refused(self, realm: str, reason: str, who: str, what: str, peer: str) -> None:
        """A request or authentication refused by policy (rate, quota, authorization, authentication)."""
        key = (realm, reason)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        self.recent.append({"time": round(time.time(), 3), "realm": realm, "reason": reason,
                            "authid": wamp.printable(who, 80), "what": wamp.printable(what, 160),
                            "peer": peer})


def outgoing_bytes(wire: Any) -> int:
    """Bytes written to a connection and not yet taken by the kernel (through a TLS layer, if any)."""
    total, t = 0, getattr(wire, "transport", None)
    for _ in range(3):
        if t is None:
            break
        data = getattr(t, "dataBuffer", None)
        if data is not None:
            total += len(data) + getattr(t, "_tempDataLen", 0)
        t = getattr(t, "transport", None)
    return total


def status(node: MetricsSource, top: int = 10) -> dict:
    """The status page's data: totals only; the page computes rates from successive polls."""
    stats = node.stats
    routers = node.realm_routers()
    realms = []
    for realm in node.realms.list():
        r = routers.get(realm.uri)
        realms.append({"uri": realm.uri, "sessions": node.table.size(realm.uri),
                       "calls": r.calls.total() if r else 0, "publications": r.publications.total() if r else 0,
                       "events": r.events_delivered if r else 0, "pending": r.dealer.pending() if r else 0})
    procedures = [{"realm": u, "uri": k, "count": n} for u, r in routers.items() for k, n in r.calls.top(top)]
    topics = [{"realm": u, "uri": k, "count": n} for u, r in routers.items() for k, n in r.publications.top(top)]
    cluster = node.config.cluster
    return {
        "node": node.config.name, "node_id": cluster.node_id if cluster else None, "time": round(time.time(), 3),
        "uptime": round(time.time() - stats.started, 1), "connections": node.connections,
        "sessions": node.table.size(), "stopping": node.stopping,
        "messages": {"received": sum(stats.msgs_in),
                     "sent": sum(stats.msgs_out) + sum(r.events_delivered for r in routers.values())},
        "realms": realms,
        "procedures": sorted(procedures, key=lambda p: -p["count"])[:top],
        "topics": sorted(topics, key=lambda p: -p["count"])[:top],
        "refusals": list(reversed(stats.recent)),
        "slow_consumer": {"drops": stats.slow_drops, "disconnects": stats.slow_disconnects},
    }
