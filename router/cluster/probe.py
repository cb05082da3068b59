"""The cluster's health as an on-call engineer alerts on it: every heartbeat, a message this node sends
to its own bus channels through Redis (a true round trip: the command connection, Redis's pub/sub and the
subscriber connection; once through the home shard, once through its data channel's shard), and the
count of live nodes. Both land in the bus's ClusterStats, which /metrics
reads; a round trip that stops coming back ages, and that age is what an alert watches.

It is also what /health reads (`working`): a subscription loop wedged after a failover, a proxy that holds
the socket open and passes nothing, a master that accepts PUBLISH and delivers nowhere all keep the
connections "up", and only a round trip that stops coming back shows them (Centrifugo's failover bugs
were of this kind: publishes succeeded and health stayed green while nothing was delivered)."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from router.cluster.connection import connected, drop_connections, link

PROBE = "probe"  # to this node itself: [monotonic time sent]


class BusProbe:
    log = Logger()

    def __init__(self, bus: Any, membership: Any, interval: float, stale_after: float | None = None) -> None:
        self.bus = bus
        self.stale_after = stale_after if stale_after is not None else max(2.0, 3 * interval)
        self._stale = False
        self._reconnected = 0.0
        self._planes: list[float | None] = [None, None]  # when a round trip last came back: control, data
        self._up: tuple[Any, float] | None = None  # (the command and subscriber links, since when both are up)
        self.membership = membership
        self.stats = bus.stats
        self._loop = task.LoopingCall(self.probe)
        self.interval = interval
        bus.on(PROBE, self._back)
        self.stats.redis_up = lambda: connected(bus.redis)
        self.stats.bus_up = lambda: all(connected(conn) for conn, _ in bus.shards) and bus.listening()

    def start(self) -> None:
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def age(self) -> float:
        """Seconds since the last round trip came back (since start, if none has)."""
        return self.stats.roundtrip_age()

    def working(self) -> bool:
        """True while the last round trip came back within `stale_after`; one log line each way."""
        ok = self.age() <= self.stale_after
        if ok == self._stale:
            self._stale = not ok
            if ok:
                self.log.info("cross-node delivery works again: this node hears itself on the bus")
            else:
                self.log.warn("cross-node delivery is not working: no message sent to this node through the bus "
                              "came back in {age:.1f}s", age=self.age())
        return ok

    def probe(self) -> None:
        if not self.working() and self._silent_while_up() > 2 * self.stale_after:
            self._reconnect()  # up but silent (seen after failovers): connect anew rather than stay wedged
        now, me = time.monotonic(), self.bus.node_id  # through the control plane and the data plane (its shard)
        self.bus.send(me, PROBE, now).addErrback(lambda f: None)  # no answer: it ages
        self.bus.send_data(me, PROBE, [now]).addErrback(lambda f: None)
        self.membership.list_nodes().addCallbacks(self._listed, lambda f: None)

    def _silent_while_up(self) -> float:
        """Seconds the bus has been silent with its connections up the whole time: an outage just ended
        is not silence (the connections just made would be dropped, and calls with them)."""
        now = time.monotonic()
        links = (*(link(conn) for conn, _ in self.bus.shards), self.bus.subscriber_link())
        if None in links:
            self._up = None
            return 0.0
        if self._up is None or self._up[0] != links:
            self._up = (links, now)
        return min(self.age(), now - self._up[1])

    def _reconnect(self) -> None:
        """Drop the command and bus connections so that they reconnect; at most once per stale_after."""
        now = time.monotonic()
        if now - self._reconnected < self.stale_after:
            return
        self._reconnected = now
        n = sum(drop_connections(conn) for conn, _ in self.bus.shards) + self.bus.drop_subscriber()
        self.log.warn("the bus has been silent for {age:.1f}s with Redis connected: dropped {n} connection(s) "
                      "to connect anew", age=self.age(), n=n)

    def _back(self, sender: str, sent: Any) -> None:
        """A round trip back: a float through the control plane, [float] through the data plane. The
        age is the older plane's: both must cross for the node to work."""
        plane = 1 if type(sent) is list and len(sent) == 1 else 0
        if plane:
            sent = sent[0]
        if sender == self.bus.node_id and type(sent) is float:
            now = time.monotonic()
            self._planes[plane] = now
            self.stats.roundtrip = now - sent
            if None not in self._planes:
                self.stats.roundtrip_at = min(self._planes)  # type: ignore[type-var]
            self.working()

    def _listed(self, nodes: list[dict]) -> None:
        self.stats.live_nodes = len(nodes)
        self.stats.nodes = sorted(str(n.get("id")) for n in nodes)[:1000]
