"""What the node counts for operators: /metrics (Prometheus text format, router/prometheus.py) and the
status page's /status.json.

The hot path only increments plain ints, lists and dicts held by the node and its realms (a
prometheus_client Counter.inc() takes a lock and costs ~10x more); a custom Collector turns them into
metric families when Prometheus scrapes. Every table keyed by client data is bounded in count and bytes.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
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

    @property
    def max_sessions(self) -> int | None: ...


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

OTHER = "other"  # the label of whatever did not fit in a bounded table, or is no known value
NO_REALM = "none"  # the realm label of an ABORT before the client named an existing realm
MAX_ERROR_URIS = 200  # distinct error URIs counted by name for the status page (callees make up their own)
MAX_REALM_LABELS = 200  # realms with series of their own; more (created through the admin realm) are `other`
MAX_PEERS = 1000  # peer nodes with cross-node series of their own
RECENT_REFUSALS = 50  # kept for the status page

# The error and close URIs exported as label values: the WAMP spec's and Courtyard's own. A callee's own
# error URIs are counted as `other` (a label must have a small, known set of values).
SPEC_ERRORS = tuple(f"wamp.error.{n}" for n in (
    "invalid_uri", "no_such_procedure", "procedure_already_exists", "no_such_registration", "no_such_subscription",
    "invalid_argument", "protocol_violation", "not_authorized", "authorization_failed", "no_such_realm",
    "no_such_role", "no_such_session", "no_such_principal", "canceled", "option_not_allowed", "no_eligible_callee",
    "option_disallowed.disclose_me", "network_failure", "feature_not_supported", "payload_size_exceeded",
    "timeout", "unavailable", "no_available_callee", "no_auth_method", "authentication_denied",
    "authentication_failed", "authentication_required", "authorization_denied", "authorization_required",
    "runtime_error", "procedure_exists_with_different_invocation_policy")) + tuple(
    f"wamp.close.{n}" for n in ("system_shutdown", "close_realm", "goodbye_and_out", "normal", "killed", "logout"))
COURTYARD_ERRORS = tuple(f"courtyard.error.{n}" for n in (
    "rate_limited", "quota_exceeded", "too_many_sessions", "too_many_subscriptions", "too_many_registrations",
    "too_many_testaments", "too_many_authentications", "cluster_unavailable", "process_busy", "process_failed",
    "no_such_process", "no_such_realm", "realm_exists", "no_such_user", "user_exists", "storage_failed",
    "too_many_sessions_per_authid")) + tuple(
    f"courtyard.close.{n}" for n in ("session_expired", "idle_timeout", "session_id_taken", "process_failed",
                                     "realm_deleted", "user_removed", "role_removed", "node_fenced"))
KNOWN_ERRORS = frozenset(SPEC_ERRORS + COURTYARD_ERRORS)
REFUSAL_REASONS = ("rate_limited", "quota_exceeded", "not_authorized", "authentication_failed",
                   "authentication_throttled")
AUTH_RESULTS = ("success", "failure")

# Histogram buckets, in seconds, chosen for a router: a local call round trip is ~0.1-2 ms, one across
# nodes a few ms, a slow callee seconds; a join is ~1 ms (anonymous) to ~100 ms (wampcra's PBKDF2); a
# local fan-out to a few subscribers is ~10 us, to thousands ~10 ms.
CALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0)
JOIN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FANOUT_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                  0.1, 0.25, 0.5)


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


class Histogram:
    """A Prometheus histogram as plain data: one bisect and two additions per observation, no lock (the
    reactor is one thread); cumulated into `le` buckets at scrape time."""

    __slots__ = ("bounds", "counts", "sum", "errors")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: past the largest bound (+Inf)
        self.sum = 0.0
        self.errors = 0  # for per-procedure and per-topic tables: answers that were errors

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def count(self) -> int:
        return sum(self.counts)

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum
        self.errors += other.errors

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, count)], +Inf last, as the exposition format wants them."""
        out, total = [], 0
        for bound, n in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def quantile(self, q: float) -> float | None:
        """An estimate (linear within the bucket, as Prometheus's histogram_quantile); None if empty."""
        total = self.count()
        if not total:
            return None
        rank, seen, lower = q * total, 0, 0.0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if i == len(self.bounds):
                    return self.bounds[-1]
                return lower + (self.bounds[i] - lower) * (rank - seen) / n
            seen += n
            lower = self.bounds[i] if i < len(self.bounds) else lower
        return self.bounds[-1]


def _le(bound: float) -> str:
    return repr(float(bound))


class Timings:
    """Histograms per key (procedure or topic URI) for the status page's top tables, bounded in count and
    bytes like TopCounter; keys past the bound share one `other` entry."""

    __slots__ = ("by_key", "bounds", "max_keys", "max_bytes", "_bytes", "other")

    def __init__(self, bounds: tuple[float, ...], max_keys: int = 1000, max_bytes: int = 256 * 1024) -> None:
        self.by_key: dict[str, Histogram] = {}
        self.bounds = bounds
        self.max_keys, self.max_bytes, self._bytes = max_keys, max_bytes, 0
        self.other = Histogram(bounds)

    def get(self, key: str) -> Histogram:
        h = self.by_key.get(key)
        if h is None:
            if len(self.by_key) >= self.max_keys or self._bytes + len(key) > self.max_bytes:
                return self.other
            h = self.by_key[key] = Histogram(self.bounds)
            self._bytes += len(key)
        return h

    def total(self) -> Histogram:
        """Every key's together (at scrape time: the hot path observes each value once, per key)."""
        out = Histogram(self.bounds)
        out.add(self.other)
        for h in self.by_key.values():
            out.add(h)
        return out


class RealmTimings:
    """What the protocol of one session of a realm times: its calls' round trips (per procedure) and its
    publications' fan-out (per topic); the realm's and the node's histograms are their sums, made at
    scrape time. Fetched once at WELCOME, so a call costs no lookup by realm."""

    __slots__ = ("procedures", "topics")

    def __init__(self) -> None:
        self.procedures = Timings(CALL_BUCKETS)
        self.topics = Timings(FANOUT_BUCKETS)


class ClusterStats:
    """Cross-node traffic and health, counted by the cluster's bus and outbox (plain ints, by peer node)
    and read at scrape time. A message to every node (a broadcast) is counted under the peer `all`."""

    __slots__ = ("sent_messages", "sent_bytes", "received_messages", "received_bytes", "dropped", "failed",
                 "purges", "live_nodes", "nodes", "roundtrip", "roundtrip_at", "started", "redis_up", "bus_up")

    def __init__(self) -> None:
        self.sent_messages: dict[str, int] = {}
        self.sent_bytes: dict[str, int] = {}
        self.received_messages: dict[str, int] = {}
        self.received_bytes: dict[str, int] = {}
        self.dropped = 0  # items refused before sending (Redis away, too large, over the in-flight limit)
        self.failed = 0  # items sent in a batch that Redis refused or no node listened to
        self.purges = 0  # dead nodes purged by this node
        self.live_nodes = 0  # as of the last probe
        self.nodes: list[str] = []  # the live nodes' ids, as of the last probe: their series start at 0
        self.roundtrip: float | None = None  # seconds, the last bus round trip (a message to itself)
        self.roundtrip_at: float | None = None  # monotonic time of the last one completed
        self.started = time.monotonic()
        self.redis_up: Callable[[], bool] = lambda: False  # set by the cluster (router/cluster/probe.py)
        self.bus_up: Callable[[], bool] = lambda: False

    def sent(self, peer: str, size: int) -> None:
        n = self.sent_messages.get(peer)
        if n is None:
            if len(self.sent_messages) >= MAX_PEERS:
                peer = OTHER
            n = self.sent_messages.get(peer, 0)
        self.sent_messages[peer] = n + 1
        self.sent_bytes[peer] = self.sent_bytes.get(peer, 0) + size

    def received(self, peer: str, size: int) -> None:
        n = self.received_messages.get(peer)
        if n is None:
            if len(self.received_messages) >= MAX_PEERS or type(peer) is not str:
                peer = OTHER
            n = self.received_messages.get(peer, 0)
        self.received_messages[peer] = n + 1
        self.received_bytes[peer] = self.received_bytes.get(peer, 0) + size

    def roundtrip_age(self, now: float | None = None) -> float:
        """Seconds since the last bus round trip completed (since start, if none has)."""
        now = time.monotonic() if now is None else now
        return now - (self.roundtrip_at if self.roundtrip_at is not None else self.started)


class Stats:
    """The node's counters. `msgs_in`/`msgs_out` are indexed by WAMP message code."""

    __slots__ = ("msgs_in", "msgs_out", "errors", "error_labels", "auth", "refusals", "recent", "slow_drops",
                 "slow_disconnects", "started", "joins", "timings", "cluster")

    def __init__(self) -> None:
        self.msgs_in = [0] * 128
        self.msgs_out = [0] * 128
        self.errors = TopCounter(MAX_ERROR_URIS, 32 * 1024)  # ERROR and ABORT sent, by URI (status page)
        self.error_labels: dict[tuple[str, str], int] = {}  # (realm, known URI or `other`) -> count
        self.auth: dict[tuple[str, str, str], int] = {}  # (realm, method, "success" | "failure") -> count
        self.refusals: dict[tuple[str, str], int] = {}  # (realm, reason) -> count
        self.recent: deque[dict] = deque(maxlen=RECENT_REFUSALS)
        self.slow_drops = 0  # bulk messages refused to peers past their outgoing budget
        self.slow_disconnects = 0  # peers disconnected for reading too slowly
        self.started = time.time()
        self.joins = Histogram(JOIN_BUCKETS)  # HELLO received -> WELCOME sent
        self.timings: dict[str, RealmTimings] = {}  # by realm
        self.cluster: ClusterStats | None = None  # in a cluster: the bus's counts

    def realm_timings(self, realm: str) -> RealmTimings:
        t = self.timings.get(realm)
        if t is None:
            if len(self.timings) >= MAX_REALM_LABELS:
                realm = OTHER
            t = self.timings.get(realm)
            if t is None:
                t = self.timings[realm] = RealmTimings()
        return t

    def error_sent(self, realm: str, uri: Any) -> None:
        """An ERROR or ABORT written: by URI for the status page, by (realm, known URI) for /metrics."""
        if type(uri) is not str:
            uri = OTHER
        self.errors.hit(uri)
        key = (realm, uri if uri in KNOWN_ERRORS else OTHER)
        labels = self.error_labels
        if key not in labels and len(labels) >= MAX_REALM_LABELS * 8:
            key = (OTHER, key[1])
        labels[key] = labels.get(key, 0) + 1

    def authenticated(self, method: str, ok: bool, realm: str = NO_REALM) -> None:
        key = (realm, method, "success" if ok else "failure")
        if key not in self.auth and len(self.auth) >= 8 * MAX_REALM_LABELS:
            key = (OTHER, method, key[2])
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


def _timed(entry: dict, h: Histogram | None) -> dict:
    """A top table's row with its error count and latency percentiles (ms), from its histogram."""
    if h is not None:
        entry["errors"] = h.errors
        for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            v = h.quantile(q)
            entry[name] = None if v is None else round(v * 1000, 3)
    return entry


def status(node: MetricsSource, top: int = 10) -> dict:
    """The status page's data: totals only; the page computes rates from successive polls."""
    from router import __version__

    stats = node.stats
    routers = node.realm_routers()
    realms = []
    for realm in node.realms.list():
        r = routers.get(realm.uri)
        realms.append({"uri": realm.uri, "sessions": node.table.size(realm.uri),
                       "calls": r.calls.total() if r else 0, "publications": r.publications.total() if r else 0,
                       "events": r.events_delivered if r else 0, "pending": r.dealer.pending() if r else 0,
                       "registrations": r.dealer.size() if r else 0, "subscriptions": r.broker.size() if r else 0})
    none = RealmTimings()
    timings = {u: stats.timings.get(u, none) for u in routers}
    procedures = [_timed({"realm": u, "uri": k, "count": n}, timings[u].procedures.by_key.get(k))
                  for u, r in routers.items() for k, n in r.calls.top(top)]
    topics = [_timed({"realm": u, "uri": k, "count": n}, timings[u].topics.by_key.get(k))
              for u, r in routers.items() for k, n in r.publications.top(top)]
    calls = Histogram(CALL_BUCKETS)  # every realm's, for the page's latency chart
    for t in stats.timings.values():
        calls.add(t.procedures.total())
    cluster = node.config.cluster
    return {
        "node": node.config.name, "node_id": cluster.node_id if cluster else None, "version": __version__,
        "time": round(time.time(), 3),
        "uptime": round(time.time() - stats.started, 1), "connections": node.connections,
        "sessions": node.table.size(), "stopping": node.stopping,
        "messages": {"received": sum(stats.msgs_in),
                     "sent": sum(stats.msgs_out) + sum(r.events_delivered for r in routers.values())},
        "realms": realms,
        "procedures": sorted(procedures, key=lambda p: -p["count"])[:top],
        "topics": sorted(topics, key=lambda p: -p["count"])[:top],
        "refusals": list(reversed(stats.recent)),
        "slow_consumer": {"drops": stats.slow_drops, "disconnects": stats.slow_disconnects},
        "latency": {"bounds": list(CALL_BUCKETS), "calls": calls.counts},
    }
