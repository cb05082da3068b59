"""The cluster's health as an on-call engineer alerts on it: every heartbeat, a message this node sends
to its own bus channel through Redis (a true round trip: the command connection, Redis's pub/sub and the
subscriber connection), and the count of live nodes. Both land in the bus's ClusterStats, which /metrics
reads; a round trip that stops coming back ages, and that age is what an alert watches."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from router.cluster.connection import connected

PROBE = "probe"  # to this node itself: [monotonic time sent]


class BusProbe:
    log = Logger()

    def __init__(self, bus: Any, membership: Any, interval: float) -> None:
        self.bus = bus
        self.membership = membership
        self.stats = bus.stats
        self._loop = task.LoopingCall(self.probe)
        self.interval = interval
        bus.on(PROBE, self._back)
        self.stats.redis_up = lambda: connected(bus.redis)
        self.stats.bus_up = lambda: connected(bus.redis) and bus._factory is not None and bool(bus._factory.size)

    def start(self) -> None:
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def probe(self) -> None:
        self.bus.send(self.bus.node_id, PROBE, time.monotonic()).addErrback(lambda f: None)  # no answer: it ages
        self.membership.list_nodes().addCallbacks(self._listed, lambda f: None)

    def _back(self, sender: str, sent: Any) -> None:
        if sender == self.bus.node_id and type(sent) is float:
            now = time.monotonic()
            self.stats.roundtrip, self.stats.roundtrip_at = now - sent, now

    def _listed(self, nodes: list[dict]) -> None:
        self.stats.live_nodes = len(nodes)
        self.stats.nodes = sorted(str(n.get("id")) for n in nodes)[:1000]
