"""Memory is given back after a load has gone (issue 23, "memory is not given back"): two real
`courtyard start` nodes on a real redis-server, real autobahn clients. Parallel multi-MiB publications
cross the nodes both ways, then tens of thousands of subscriptions are made on both (thousands of
distinct topics, so each node's interest in the other's grows too), half unsubscribed, and every client
leaves. Each node's resident set must come back near where it started within seconds: what the load
allocated is freed (outbox, interest index, sessions), the cyclic garbage it left (Failures of the Redis
commands in flight on a bus connection dropped under the load) is collected, and the freed heap is handed
back to the system (router/memory.py). The nodes run as docs/operations.md says to for that:
PYTHONMALLOC=malloc (CPython's own allocator keeps an arena while one object in it lives, so without it
~30 MB of the peak stays: a bound that close to what a node keeps without router/memory.py would flap).
"""

from __future__ import annotations

import os
import time

import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, task

from tests.helpers.cluster import assert_clean, node_process
from tests.helpers.poll import until
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred

MIB = 1024 * 1024
BLOB = 4 * MIB  # each publication
PUBLISHERS, ROUNDS = 4, 2  # per node, in parallel
TOPICS, SESSIONS = 3000, 3  # per node: distinct topics; sessions subscribing to each of them
BOUND_MB = 20  # a node's RSS within this of its start once the load has gone (measured: +7 to +12) ...
WITHIN = 15.0  # ... within these seconds (memory.TRIM_INTERVAL = 5 s: the first quiet tick after the load)


def rss_mb(pid: int) -> float:
    """A process's resident set (VmRSS) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def _connect(node):
    return await connect(node.url, serializer="msgpack")  # bytes as they are (JSON would base64 them)


async def _subscribe_all(session, topics: list[str]) -> list:
    subs = []
    for i in range(0, len(topics), 500):
        batch = [session.subscribe(lambda *a: None, t) for t in topics[i:i + 500]]
        subs += await with_timeout(defer.gatherResults(batch), 30)
    return subs


async def _unsubscribe_all(subs: list) -> None:
    for i in range(0, len(subs), 500):
        await with_timeout(defer.gatherResults([s.unsubscribe() for s in subs[i:i + 500]]), 30)


@ensure
async def test_rss_returns_near_its_start_after_big_publications_and_a_subscription_flood(tmp_path, redis_server):
    # The bus may carry a round of publications at once: Redis must not drop it (test_cluster_bounds).
    redis_server.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 256mb 64mb 60")
    config = {"listeners": [{"max_message_size": BLOB + MIB, "max_outgoing_buffer": 64 * MIB}],
              "limits": {"max_subscriptions_per_session": TOPICS}}
    nodes = {n: node_process(tmp_path, n, redis_server.url, config, {"PYTHONMALLOC": "malloc"}, node_timeout=5.0)
             for n in "ab"}
    for n in nodes.values():
        n.start()
    clients: list = []
    peak: dict[str, float] = {}

    def sample() -> None:
        for n, p in nodes.items():
            peak[n] = max(peak.get(n, 0.0), rss_mb(p.proc.pid))

    sampler = task.LoopingCall(sample)
    try:
        # Warm up (first sessions, first events across: lazy imports, caches) before the baseline.
        for here, there in ("ab", "ba"):
            sub, pub = await _connect(nodes[there]), await _connect(nodes[here])
            got: list = []
            await sub.subscribe(got.append, "mem.warm")
            await until(lambda there=there: redis_server.command("SCARD", f"cy:subs:{there}") >= 1, 5, "interest")
            await pub.publish("mem.warm", b"x" * MIB, options=PublishOptions(acknowledge=True))
            await until(lambda got=got: got, 10, "the warm-up event")
            sub.leave(), pub.leave()
        await sleep(1)
        start = {n: rss_mb(p.proc.pid) for n, p in nodes.items()}
        sampler.start(0.2)
        t0 = time.monotonic()

        # Big publications in parallel, each node to two subscribers on the other.
        received = {n: [] for n in nodes}
        for here in nodes:
            for _ in range(2):
                s = await _connect(nodes[here])
                clients.append(s)
                await s.subscribe(lambda blob, here=here: received[here].append(len(blob)), "mem.big")
        await until(lambda: all(redis_server.command("SCARD", f"cy:subs:{n}") >= 1 for n in nodes), 5, "interest")
        await sleep(0.5)
        publishers = {n: [await _connect(p) for _ in range(PUBLISHERS)] for n, p in nodes.items()}
        clients += [p for ps in publishers.values() for p in ps]
        blob = os.urandom(BLOB)
        for _ in range(ROUNDS):
            await with_timeout(defer.gatherResults([p.publish("mem.big", blob, options=PublishOptions(acknowledge=True))
                                                    for ps in publishers.values() for p in ps]), 30)
        expected = 2 * PUBLISHERS * ROUNDS * 2  # per node: both nodes publish, two subscribers each
        await until(lambda: all(len(r) == expected for r in received.values()), 20, "every big event")

        # The flood: SESSIONS × TOPICS subscriptions on each node, then half unsubscribed, all gone.
        flooders = {n: [await _connect(p) for _ in range(SESSIONS)] for n, p in nodes.items()}
        clients += [f for fs in flooders.values() for f in fs]
        made = await defer.gatherResults([
            defer.ensureDeferred(_subscribe_all(f, [f"mem.flood.{n}.{i}" for i in range(TOPICS)]))
            for n, fs in flooders.items() for f in fs])
        await defer.gatherResults([defer.ensureDeferred(_unsubscribe_all(subs)) for subs in made[::2]])
        for c in clients:
            c.leave()
        await until(lambda: not any(c.is_connected() for c in clients), 10, "every client gone")
        load = time.monotonic() - t0
        sampler.stop()

        t1 = time.monotonic()
        back = await until(lambda: all(rss_mb(p.proc.pid) <= start[n] + BOUND_MB for n, p in nodes.items()),
                           WITHIN, step=0.5, fail=False)
        end = {n: rss_mb(p.proc.pid) for n, p in nodes.items()}
        figures = {n: f"{start[n]:.0f} -> {peak[n]:.0f} -> {end[n]:.0f} MB" for n in nodes}
        print(f"RSS start -> peak -> end: {figures}; load {load:.1f} s, back in {time.monotonic() - t1:.1f} s")
        assert back, f"a node kept more than start + {BOUND_MB} MB {WITHIN:g}s after the load: {figures}"
        assert all(redis_server.command("SCARD", f"cy:subs:{n}") == 0 for n in nodes)
    finally:
        if sampler.running:
            sampler.stop()
        for c in clients:
            if c.is_connected():
                c.leave()
        for n in nodes.values():
            n.stop()
    assert_clean(*nodes.values())
