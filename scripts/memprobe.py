"""Memory after a load (issue 23, item 3): two real nodes on one redis-server, 8 parallel 6 MiB
publications A→B (three rounds), a 52,000-subscription flood on B, unsubscribed and left; RSS of both
at the start, after each load and 12 s after the end. NAME=VALUE arguments go to the nodes'
environment (e.g. PYTHONMALLOC=malloc). From the repository: .venv/bin/python scripts/memprobe.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from autobahn.wamp.types import PublishOptions  # noqa: E402
from soak import Procs, connect, free_port, rss_kb, sleep  # noqa: E402
from twisted.internet import defer, reactor  # noqa: E402

MIB = 1024 * 1024


def start_node(procs: Procs, name: str, env: dict) -> None:
    port = free_port()
    config = {"listeners": [{"port": port, "max_message_size": 7 * MIB, "max_outgoing_buffer": 64 * MIB}],
              "admin": {"data_dir": None}, "limits": {"max_subscriptions_per_session": 100_000},
              "cluster": {"redis": f"redis://127.0.0.1:{procs.redis_port}/0", "node_id": name}}
    path = procs.workdir / f"{name}.yaml"
    path.write_text(json.dumps(config))
    procs.logs[name] = procs.workdir / f"{name}.log"
    procs.nodes[name] = subprocess.Popen([sys.executable, "-m", "router.cli", "start", "-c", str(path)],
                                         stdout=open(procs.logs[name], "w"), stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, **env})
    procs.ports[name] = port
    deadline = time.monotonic() + 30
    while "listening for WAMP" not in procs.logs[name].read_text() and time.monotonic() < deadline:
        time.sleep(0.05)


async def run(procs: Procs, out: dict) -> None:
    def rss() -> dict:
        return {n: round(rss_kb(p.pid) / 1024, 1) for n, p in procs.nodes.items()}

    out["start"] = rss()
    subs = [await connect(procs.ports["b"]) for _ in range(2)]
    got: list = []
    for s in subs:
        await s.subscribe(lambda blob: got.append(len(blob)), "mem.big")
    await sleep(1)
    pubs = [await connect(procs.ports["a"]) for _ in range(8)]
    blob = b"x" * (6 * MIB)
    for _ in range(3):
        await defer.DeferredList([p.publish("mem.big", blob, options=PublishOptions(acknowledge=True)) for p in pubs])
    await sleep(3)
    out["events received on B (of 48)"] = len(got)
    out["after publications"] = rss()
    flood = await connect(procs.ports["b"])
    flooded = []
    for i in range(0, 52_000, 1000):
        flooded += await defer.gatherResults([flood.subscribe(lambda *a: None, f"mem.flood.{j}")
                                              for j in range(i, i + 1000)])
    out["after flood"] = rss()
    for i in range(0, len(flooded), 1000):
        await defer.gatherResults([s.unsubscribe() for s in flooded[i:i + 1000]])
    for c in [flood, *pubs, *subs]:
        c.leave()
    await sleep(12)
    out["end (12 s later)"] = rss()


def main() -> None:
    env = dict(a.split("=", 1) for a in sys.argv[1:])
    procs = Procs(Path(tempfile.mkdtemp(prefix="courtyard-memprobe-")))
    out: dict = {"env": env}
    try:
        procs.start_redis()
        start_node(procs, "a", env)
        start_node(procs, "b", env)
        d = defer.ensureDeferred(run(procs, out))
        d.addErrback(lambda f: out.update(crash=f.getTraceback())).addBoth(lambda _: reactor.stop())
        reactor.run()
    finally:
        procs.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
