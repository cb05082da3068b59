"""Whether cross-node delivery works, not only whether Redis answers PING: every `interval` the node
sends itself a message through the bus (PUBLISH on the commands connection, heard back on the
subscriber one), so the whole path another node's event or call takes is exercised. A subscription
loop wedged after a failover, a proxy that holds the socket open and passes nothing, a master that
accepts PUBLISH and delivers nowhere: each shows as a probe that stops coming back, and `/health`
says `degraded` once the last one is older than `stale_after`.

(Centrifugo's failover bugs were of this kind: its publishes succeeded and its health stayed green
while nothing was delivered.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

PROBE = "probe"  # to this node itself: [sequence, wall-clock time sent]


class BusProbe:
    log = Logger()

    def __init__(self, bus: Any, node_id: str, interval: float, stale_after: float | None = None,
                 dropped: Callable[[], int] = lambda: 0) -> None:
        self.bus = bus  # narrow use: on(), send()
        self.dropped = dropped  # events not sent to other nodes so far (pub/sub's count), for /metrics
        self.node_id = node_id
        self.interval = interval
        self.stale_after = stale_after if stale_after is not None else max(2.0, 3 * interval)
        self.sent = 0
        self.received = 0
        self.round_trip: float | None = None  # seconds, of the last probe back
        self._last_back = time.monotonic()  # counted from start: a node never heard back goes stale too
        self._stale = False
        self._loop = task.LoopingCall(self._send)
        bus.on(PROBE, self._back)

    def start(self) -> None:
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _send(self) -> None:
        self.sent += 1
        self.bus.send(self.node_id, PROBE, [self.sent, time.time()]).addErrback(lambda f: None)
        self.working()  # notice a wedge even when nobody asks /health

    def _back(self, sender: str, body: list) -> None:
        if sender != self.node_id:
            return
        self.received += 1
        self._last_back = time.monotonic()
        try:
            self.round_trip = max(0.0, time.time() - float(body[1]))
        except (TypeError, ValueError, IndexError):
            pass
        self.working()

    def age(self) -> float:
        """Seconds since the last probe came back (since start, if none has)."""
        return time.monotonic() - self._last_back

    def working(self) -> bool:
        """True while the last probe came back within `stale_after`; one log line each way."""
        ok = self.age() <= self.stale_after
        if ok == self._stale:
            self._stale = not ok
            if ok:
                self.log.info("cross-node delivery works again: this node hears itself on the bus")
            else:
                self.log.warn("cross-node delivery is not working: no message sent to this node through the bus "
                              "came back in {age:.1f}s", age=self.age())
        return ok

    def collect(self) -> Iterator[Any]:
        """prometheus_client metric families (a Collector's collect)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("courtyard_cluster_bus_probe_age_seconds", "Seconds since this node last heard its "
                                "own probe through the cluster's bus (cross-node delivery works while this is "
                                "small)", value=self.age())
        rtt = self.round_trip if self.round_trip is not None else float("nan")
        yield GaugeMetricFamily("courtyard_cluster_bus_probe_round_trip_seconds", "Round trip of the last probe "
                                "through the bus", value=rtt)
        yield GaugeMetricFamily("courtyard_cluster_bus_working", "1 while this node's probe comes back through the "
                                "bus within its limit, else 0", value=1 if self.age() <= self.stale_after else 0)
        yield CounterMetricFamily("courtyard_cluster_bus_probes_sent", "Probes sent through the bus", value=self.sent)
        yield CounterMetricFamily("courtyard_cluster_events_dropped", "Events not sent to another node's subscribers "
                                  "(Redis away, too much in flight): counted, never silent", value=self.dropped())
