"""/metrics: a prometheus_client Collector that reads the node's counters (router/metrics.py) at scrape
time, and the process's CPU and memory. Imported on the first scrape only: prometheus_client takes ~90 ms
and ~1.4 MB to import, which a node that is never scraped should not pay at start-up.

Every label value known in advance (message types, realms, the spec's and Courtyard's error URIs,
refusal reasons, authentication methods, live peer nodes) is exported from the start, at 0: a series
that first appears at 50 hides those 50 from `increase()`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import autobahn
import twisted
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from router import __version__, wamp
from router.metrics import (
    AUTH_RESULTS,
    CALL_BUCKETS,
    COURTYARD_ERRORS,
    FANOUT_BUCKETS,
    NO_REALM,
    OTHER,
    REFUSAL_REASONS,
    SPEC_ERRORS,
    ClusterStats,
    Histogram,
    outgoing_bytes,
)

if TYPE_CHECKING:
    from router.metrics import MetricsSource

_EMPTY_CALLS = Histogram(CALL_BUCKETS)
NO_REALM_ERRORS = (wamp.PROTOCOL_VIOLATION, wamp.NO_SUCH_REALM, wamp.INVALID_URI, wamp.NO_AUTH_METHOD,
                   wamp.PAYLOAD_SIZE_EXCEEDED, OTHER)
BROADCAST_PEER = "all"  # the peer label of a message to every node


class NodeCollector:
    """A prometheus_client Collector reading the node's counters at scrape time."""

    def __init__(self, node: MetricsSource) -> None:
        self.node = node
        self.build = {"version": __version__, "python": platform.python_version(),
                      "twisted": twisted.__version__, "autobahn": autobahn.__version__}

    def collect(self) -> Iterator[Any]:
        node, stats = self.node, self.node.stats
        routers = node.realm_routers()
        realms = sorted(r.uri for r in node.realms.list())
        info = GaugeMetricFamily("courtyard_build_info", "The running Courtyard's version and those of its Python, "
                                 "Twisted and Autobahn (always 1)", labels=list(self.build))
        info.add_metric(list(self.build.values()), 1)
        yield info
        g = GaugeMetricFamily("courtyard_sessions", "Sessions open on this node, per realm", labels=["realm"])
        for realm in realms:
            g.add_metric([realm], node.table.size(realm))
        yield g
        yield GaugeMetricFamily("courtyard_max_sessions", "limits.max_sessions: sessions this node admits (the "
                                "admin realm may open limits.admin_reserve more)",
                                value=node.config.max_sessions if node.config.max_sessions is not None else 0)
        yield GaugeMetricFamily("courtyard_connections", "Client connections, with a session or not",
                                value=node.connections)
        sent = list(stats.msgs_out)
        sent[wamp.EVENT] += sum(r.events_delivered for r in routers.values())  # counted per realm
        for direction, counts in (("received", stats.msgs_in), ("sent", sent)):
            c = CounterMetricFamily(f"courtyard_messages_{direction}", f"WAMP messages {direction}, per type",
                                    labels=["type"])
            for code, name in wamp.MESSAGE_NAMES.items():  # every type, 0 included: a series from the start
                c.add_metric([name], counts[code])
            yield c
        yield from _per_realm(realms, routers)
        yield from _outcomes(node, realms)
        yield CounterMetricFamily("courtyard_slow_consumer_drops", "Bulk messages refused to peers past their "
                                  "outgoing budget", value=stats.slow_drops)
        yield CounterMetricFamily("courtyard_slow_consumer_disconnects", "Peers disconnected for reading too slowly",
                                  value=stats.slow_disconnects)
        yield GaugeMetricFamily("courtyard_outgoing_buffer_bytes", "Bytes written to sessions' connections and "
                                "not yet sent", value=sum(outgoing_bytes(s.transport.wire)
                                                          for s in node.table.list() if hasattr(s.transport, "wire")))
        yield from _histograms(stats, realms)
        if stats.cluster is not None:
            yield from _cluster(node, stats.cluster)


def _per_realm(realms: list[str], routers: dict) -> Iterator[Any]:
    calls = CounterMetricFamily("courtyard_calls", "CALLs accepted (past rate, quota and authorization), per realm",
                                labels=["realm"])
    routed = CounterMetricFamily("courtyard_calls_routed", "INVOCATIONs sent to callees, per realm",
                                 labels=["realm"])
    pubs = CounterMetricFamily("courtyard_publications", "PUBLISHes accepted, per realm", labels=["realm"])
    events = CounterMetricFamily("courtyard_events_delivered", "EVENTs written to subscribers, per realm",
                                 labels=["realm"])
    pending = GaugeMetricFamily("courtyard_pending_calls", "Calls sent to callees and not answered yet, per realm",
                                labels=["realm"])
    regs = GaugeMetricFamily("courtyard_registrations", "Registrations on this node, per realm", labels=["realm"])
    subs = GaugeMetricFamily("courtyard_subscriptions", "Subscriptions on this node, per realm", labels=["realm"])
    for uri in sorted(set(realms) | set(routers)):
        r = routers.get(uri)
        calls.add_metric([uri], r.calls.total() if r else 0)
        routed.add_metric([uri], r.dealer.calls_routed if r else 0)
        pubs.add_metric([uri], r.publications.total() if r else 0)
        events.add_metric([uri], r.events_delivered if r else 0)
        pending.add_metric([uri], r.dealer.pending() if r else 0)
        regs.add_metric([uri], r.dealer.size() if r else 0)
        subs.add_metric([uri], r.broker.size() if r else 0)
    yield from (calls, routed, pubs, events, pending, regs, subs)


def _outcomes(node: MetricsSource, realms: list[str]) -> Iterator[Any]:
    stats = node.stats
    c = CounterMetricFamily("courtyard_errors", "ERROR and ABORT messages sent, per realm and error URI (the "
                            "WAMP spec's and Courtyard's own; any other URI is `other`)", labels=["realm", "uri"])
    counts = dict.fromkeys(((r, u) for r in realms for u in (*SPEC_ERRORS, *COURTYARD_ERRORS, OTHER)), 0)
    counts.update(dict.fromkeys(((NO_REALM, u) for u in NO_REALM_ERRORS), 0))  # ABORTs before a realm is known
    counts.update(stats.error_labels)
    for (realm, uri), n in sorted(counts.items()):
        c.add_metric([realm, uri], n)
    yield c
    c = CounterMetricFamily("courtyard_auth", "Authentications, per realm, method and result",
                            labels=["realm", "method", "result"])
    counts = {}
    for realm in node.realms.list():
        for method in realm.auth.enabled():
            counts.update(dict.fromkeys(((realm.uri, method, r) for r in AUTH_RESULTS), 0))
    counts.update(stats.auth)
    for (realm, method, result), n in sorted(counts.items()):
        c.add_metric([realm, method, result], n)
    yield c
    c = CounterMetricFamily("courtyard_refusals", "Requests and authentications refused by policy, per realm "
                            "and reason", labels=["realm", "reason"])
    counts = dict.fromkeys(((r, why) for r in realms for why in REFUSAL_REASONS), 0)
    counts.update(stats.refusals)
    for (realm, reason), n in sorted(counts.items()):
        c.add_metric([realm, reason], n)
    yield c


def _histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    family.add_metric(labels, h.cumulative(), h.sum)


def _histograms(stats: Any, realms: list[str]) -> Iterator[Any]:
    calls = HistogramMetricFamily("courtyard_call_duration_seconds", "A call's round trip in the router: CALL "
                                  "received to RESULT or ERROR written, per realm", labels=["realm"])
    fanout = Histogram(FANOUT_BUCKETS)
    for realm in sorted(set(realms) | set(stats.timings)):
        t = stats.timings.get(realm)
        _histogram(calls, [realm], t.procedures.total() if t is not None else _EMPTY_CALLS)
        if t is not None:
            fanout.add(t.topics.total())
    yield calls
    joins = HistogramMetricFamily("courtyard_join_duration_seconds", "HELLO received to WELCOME sent "
                                  "(authentication included)")
    _histogram(joins, [], stats.joins)
    yield joins
    family = HistogramMetricFamily("courtyard_publish_fanout_duration_seconds", "Routing one PUBLISH: its EVENTs "
                                   "written to this node's subscribers and queued for other nodes'")
    _histogram(family, [], fanout)
    yield family


def _cluster(node: MetricsSource, cs: ClusterStats) -> Iterator[Any]:
    yield GaugeMetricFamily("courtyard_cluster_redis_connected", "1 while this node's command connection to Redis "
                            "is up", value=int(cs.redis_up()))
    yield GaugeMetricFamily("courtyard_cluster_bus_connected", "1 while the cluster bus can send and listen (both "
                            "Redis connections up)", value=int(cs.bus_up()))
    yield GaugeMetricFamily("courtyard_cluster_bus_roundtrip_age_seconds", "Seconds since a message this node "
                            "sent itself through the bus last came back (since start, if none has)",
                            value=round(cs.roundtrip_age(time.monotonic()), 3))
    yield GaugeMetricFamily("courtyard_cluster_bus_roundtrip_seconds", "The last bus round trip (a message to "
                            "this node's own channel through Redis)",
                            value=cs.roundtrip if cs.roundtrip is not None else float("nan"))
    yield GaugeMetricFamily("courtyard_cluster_live_nodes", "Nodes with a live heartbeat in Redis, this one "
                            "included, as of the last probe", value=cs.live_nodes)
    me = node.config.cluster.node_id
    peers = [n for n in cs.nodes if n != me]
    for direction, messages, size, extra in (("sent", cs.sent_messages, cs.sent_bytes, [BROADCAST_PEER]),
                                            ("received", cs.received_messages, cs.received_bytes, [])):
        m = CounterMetricFamily(f"courtyard_cluster_messages_{direction}", f"Bus messages {direction}, per peer "
                                f"node (`{BROADCAST_PEER}`: broadcasts)", labels=["peer"])
        b = CounterMetricFamily(f"courtyard_cluster_{direction}_bytes", f"Bus message bytes {direction}, per peer "
                                "node", labels=["peer"])
        for peer in sorted(set(peers) | set(extra) | set(messages)):
            m.add_metric([peer], messages.get(peer, 0))
            b.add_metric([peer], size.get(peer, 0))
        yield m
        yield b
    yield CounterMetricFamily("courtyard_cluster_dropped_items", "Cross-node items (calls, answers, events) "
                              "refused before sending: Redis away, too large, over the in-flight limit",
                              value=cs.dropped)
    yield CounterMetricFamily("courtyard_cluster_failed_items", "Cross-node items sent in a batch that Redis "
                              "refused or that no node was listening to", value=cs.failed)
    yield CounterMetricFamily("courtyard_cluster_purges", "Dead nodes whose state this node purged",
                              value=cs.purges)


def registry(node: MetricsSource) -> CollectorRegistry:
    """The node's own registry: its counters and the process's CPU, memory and file descriptors."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(node))
    ProcessCollector(registry=reg)
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
