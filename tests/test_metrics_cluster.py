"""courtyard_cluster_* (issue 25) on real nodes and a real redis-server: traffic per peer node, the bus
round trip, live nodes, a kill -9 purged and counted, items dropped while Redis is away."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError

from tests.helpers.cluster import node_process
from tests.helpers.metrics import scrape
from tests.wampclient import connect

ensure = pytest_twisted.ensureDeferred
DOC = Path(__file__).resolve().parent.parent / "docs" / "observability.md"


def _v(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), math.nan)


async def _until(port: int, check, seconds: float, what: str) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        samples = await scrape(port)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, (what, {k: v for k, v in samples.items() if "cluster" in k[0]})
        await sleep(0.05)


@ensure
async def test_kill_9_of_a_node_shows_in_live_nodes_and_purges(tmp_path, redis_server):
    a, b = (node_process(tmp_path, n, redis_server.url).start() for n in "ab")
    try:
        s = await _until(a.port, lambda s: _v(s, "courtyard_cluster_live_nodes") == 2, 10, "two live nodes")
        assert _v(s, "courtyard_cluster_redis_connected") == 1 and _v(s, "courtyard_cluster_bus_connected") == 1
        assert _v(s, "courtyard_cluster_bus_roundtrip_age_seconds") < 1.0
        assert 0 < _v(s, "courtyard_cluster_bus_roundtrip_seconds") < 1.0
        assert _v(s, "courtyard_cluster_purges_total") == 0
        assert _v(s, "courtyard_cluster_messages_received_total", peer="b") >= 0  # the peer's series, from the start
        assert _v(s, "courtyard_cluster_messages_sent_total", peer="all") >= 0
        # docs/observability.md lists exactly what a cluster node exports
        documented = set(re.findall(r"`(courtyard_[a-z_]+)`", DOC.read_text()))
        exported = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in documented
                    else n for n, _ in s if n.startswith("courtyard_")}
        assert exported == documented, (exported - documented, documented - exported)
        b.proc.kill()
        b.proc.wait(10)
        s = await _until(a.port, lambda s: _v(s, "courtyard_cluster_purges_total") == 1 and
                         _v(s, "courtyard_cluster_live_nodes") == 1, 10, "b purged")
    finally:
        b.stop()
        a.stop()


@ensure
async def test_cross_node_traffic_per_peer_and_items_dropped_while_redis_is_away(make_cluster, redis_server):
    a = await make_cluster("a")
    b = await make_cluster("b")
    callee = await connect(b.url)
    await callee.register(lambda x: x, "com.example.echo")
    caller = await connect(a.url)
    for _ in range(100):
        try:
            await caller.call("com.example.echo", 1)
            break
        except ApplicationError:
            await sleep(0.05)
    before = await scrape(a.port)
    for _ in range(10):
        assert await caller.call("com.example.echo", "x" * 1000) == "x" * 1000
    after = await scrape(a.port)
    d = lambda name, **labels: _v(after, name, **labels) - _v(before, name, **labels)  # noqa: E731
    assert d("courtyard_cluster_messages_sent_total", peer="b") >= 10  # one batch per call, probes aside
    assert d("courtyard_cluster_sent_bytes_total", peer="b") > 10 * 1000
    assert d("courtyard_cluster_received_bytes_total", peer="b") > 10 * 1000  # the answers
    assert _v(after, "courtyard_cluster_dropped_items_total") == 0
    assert _v(after, "courtyard_cluster_failed_items_total") == 0

    redis_server.stop()
    await _until(a.port, lambda s: _v(s, "courtyard_cluster_redis_connected") == 0, 10, "redis gone")
    with pytest.raises(ApplicationError):
        await caller.call("com.example.echo", 2)
    s = await _until(a.port, lambda s: _v(s, "courtyard_cluster_dropped_items_total") >= 1 and
                     _v(s, "courtyard_cluster_bus_roundtrip_age_seconds") > 0.5, 10, "dropped and aging")
    assert _v(s, "courtyard_cluster_bus_connected") == 0
    for c in (callee, caller):
        c.leave()
