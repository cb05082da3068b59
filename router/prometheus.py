"""/metrics: a prometheus_client Collector that reads the node's counters (router/metrics.py) at scrape
time, and the process's CPU and memory. Imported on the first scrape only: prometheus_client takes ~90 ms
and ~1.4 MB to import, which a node that is never scraped should not pay at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from router import wamp
from router.metrics import OTHER, outgoing_bytes

if TYPE_CHECKING:
    from router.metrics import MetricsSource


class NodeCollector:
    """A prometheus_client Collector reading the node's counters at scrape time."""

    def __init__(self, node: MetricsSource) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        node, stats = self.node, self.node.stats
        routers = node.realm_routers()
        g = GaugeMetricFamily("courtyard_sessions", "Sessions open on this node, per realm", labels=["realm"])
        for realm in node.realms.list():
            g.add_metric([realm.uri], node.table.size(realm.uri))
        yield g
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
        yield from _per_realm(routers)
        c = CounterMetricFamily("courtyard_errors", "ERROR and ABORT messages sent, per error URI", labels=["uri"])
        for uri, n in stats.errors.counts.items():
            c.add_metric([uri], n)
        if stats.errors.other:
            c.add_metric([OTHER], stats.errors.other)
        yield c
        c = CounterMetricFamily("courtyard_auth", "Authentications, per method and result",
                                labels=["method", "result"])
        for (method, result), n in sorted(stats.auth.items()):
            c.add_metric([method, result], n)
        yield c
        c = CounterMetricFamily("courtyard_refusals", "Requests and authentications refused by policy, per realm "
                                "and reason", labels=["realm", "reason"])
        for (realm, reason), n in sorted(stats.refusals.items()):
            c.add_metric([realm, reason], n)
        yield c
        yield CounterMetricFamily("courtyard_slow_consumer_drops", "Bulk messages refused to peers past their "
                                  "outgoing budget", value=stats.slow_drops)
        yield CounterMetricFamily("courtyard_slow_consumer_disconnects", "Peers disconnected for reading too slowly",
                                  value=stats.slow_disconnects)
        yield GaugeMetricFamily("courtyard_outgoing_buffer_bytes", "Bytes written to sessions' connections and "
                                "not yet sent", value=sum(outgoing_bytes(s.transport.wire)
                                                          for s in node.table.list() if hasattr(s.transport, "wire")))


def _per_realm(routers: dict) -> Iterator[Any]:
    calls = CounterMetricFamily("courtyard_calls", "CALLs accepted (past rate, quota and authorization), per realm",
                                labels=["realm"])
    routed = CounterMetricFamily("courtyard_calls_routed", "INVOCATIONs sent to callees, per realm",
                                 labels=["realm"])
    pubs = CounterMetricFamily("courtyard_publications", "PUBLISHes accepted, per realm", labels=["realm"])
    events = CounterMetricFamily("courtyard_events_delivered", "EVENTs written to subscribers, per realm",
                                 labels=["realm"])
    pending = GaugeMetricFamily("courtyard_pending_calls", "Calls sent to callees and not answered yet, per realm",
                                labels=["realm"])
    for uri, r in sorted(routers.items()):
        calls.add_metric([uri], r.calls.total())
        routed.add_metric([uri], r.dealer.calls_routed)
        pubs.add_metric([uri], r.publications.total())
        events.add_metric([uri], r.events_delivered)
        pending.add_metric([uri], r.dealer.pending())
    yield from (calls, routed, pubs, events, pending)


def registry(node: MetricsSource) -> CollectorRegistry:
    """The node's own registry: its counters and the process's CPU, memory and file descriptors."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(node))
    ProcessCollector(registry=reg)
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
