"""What "one router across nodes" costs per change (issue 20, item 6): the time from REGISTER to
REGISTERED, UNREGISTER to UNREGISTERED, SUBSCRIBE to SUBSCRIBED and UNSUBSCRIBE to UNSUBSCRIBED, and from
opening a connection to WELCOME, on one node and on a node of a two-node cluster (which answers only once
the other node has applied the change).

    .venv/bin/python -m bench.consistency [--rounds 200]

Starts its own redis-server and routers (`courtyard start`) on loopback; one autobahn client does the
changes one after the other and reports the median and 90th percentile in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from autobahn.twisted.component import Component
from twisted.internet import defer, reactor, task

from bench import procs


def _ms(samples: list[float]) -> str:
    samples = sorted(samples)
    return f"median {statistics.median(samples) * 1000:.2f} ms, p90 {samples[int(len(samples) * 0.9)] * 1000:.2f} ms"


async def _join(url: str):
    joined: defer.Deferred = defer.Deferred()
    comp = Component(transports=[{"url": url, "max_retries": 0}], realm="realm1")
    comp.on("join", lambda session, details: joined.callback(session))
    comp.start(reactor)
    return await joined


async def measure(url: str, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"join": [], "register": [], "unregister": [], "subscribe": [],
                                     "unsubscribe": []}
    for _ in range(min(rounds, 50)):
        t0 = time.perf_counter()
        s = await _join(url)
        times["join"].append(time.perf_counter() - t0)
        s.leave()
    session = await _join(url)
    for i in range(rounds):
        t0 = time.perf_counter()
        reg = await session.register(lambda: None, f"com.bench.p{i}")
        t1 = time.perf_counter()
        await reg.unregister()
        t2 = time.perf_counter()
        sub = await session.subscribe(lambda: None, f"com.bench.t{i}")
        t3 = time.perf_counter()
        await sub.unsubscribe()
        t4 = time.perf_counter()
        for key, dt in zip(["register", "unregister", "subscribe", "unsubscribe"], [t1 - t0, t2 - t1, t3 - t2, t4 - t3],
                           strict=True):
            times[key].append(dt)
    session.leave()
    return times


async def run(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        redis = procs.start_redis(work).wait()
        url = f"redis://127.0.0.1:{redis.port}/0"
        one = procs.start_router(work, name="one").wait()
        a = procs.start_router(work, name="a", cluster=url).wait()
        b = procs.start_router(work, name="b", cluster=url).wait()
        try:
            await task.deferLater(reactor, 1.0, lambda: None)  # both nodes see each other
            for label, port in [("one node", one.port), ("cluster node a (b live)", a.port)]:
                times = await measure(f"ws://127.0.0.1:{port}/ws", rounds)
                print(f"{label}:")
                for key, samples in times.items():
                    print(f"  {key:12} {_ms(samples)}")
        finally:
            for server in (b, a, one, redis):
                server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    failed: list = []
    d = defer.ensureDeferred(run(args.rounds))
    d.addErrback(failed.append).addBoth(lambda _: reactor.stop())
    reactor.run()
    if failed:
        failed[0].raiseException()


if __name__ == "__main__":
    main()
