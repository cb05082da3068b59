"""`python -m bench.storm`: a reconnect storm (issue 24). N clients are joined to a real `courtyard
start`; the node is restarted (SIGTERM, then started again: a deploy); every client reconnects at once
with full-jitter exponential backoff (0.1 s base, doubling, 5 s cap). Measured: the time from the new
node's start until all N are joined again, the new node's peak RSS (VmHWM) over the storm, how many
connection attempts that took and how many were refused by the admission limits (HTTP 503).

The clients come from 20 loopback addresses (127.0.0.2 and up), as many hosts behind a load balancer
would, and are the bench's light WebSocket client (bench/wsclient.py), so the router gets the CPU."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor, task, threads

from bench.load import raise_nofile
from bench.wsclient import ABORT, HELLO, WELCOME, ClientFactory, Codec, WsClient

BASE, CAP = 0.1, 5.0
ADDRESSES = 20


class Storm:
    def __init__(self, url: str, n: int) -> None:
        self.url, self.n = url, n
        self.codec = Codec("json")
        self.joined: set[int] = set()
        self.attempts = 0
        self.refused = 0
        self.failures: dict[int, int] = {}  # client → attempts in a row that failed (its backoff)
        self.factories = [ClientFactory(url, "json", StormClient, lost=lambda p, i=i: self.lost(i), storm=self,
                                        index=i) for i in range(n)]

    def connect(self, i: int) -> None:
        self.attempts += 1
        f = self.factories[i]
        reactor.connectTCP(f.host, f.port, f, timeout=30, bindAddress=(f"127.0.0.{2 + i % ADDRESSES}", 0))

    def lost(self, i: int) -> None:
        self.joined.discard(i)
        k = self.failures.get(i, 0)
        self.failures[i] = k + 1
        reactor.callLater(random.uniform(0, min(CAP, BASE * 2 ** k)), self.connect, i)


class StormClient(WsClient):
    def __init__(self, host: str, path: str, subprotocol: str, storm: Storm, index: int) -> None:
        super().__init__(host, path, subprotocol)
        self.storm, self.index = storm, index

    def opened(self) -> None:
        self.send(self.storm.codec.frame([HELLO, "realm1", {"roles": {"subscriber": {}}}]))

    def on_frame(self, payload: bytes) -> None:
        msg = self.storm.codec.decode(payload)
        if msg[0] == WELCOME:
            self.storm.joined.add(self.index)
            self.storm.failures[self.index] = 0
        elif msg[0] == ABORT:
            self.transport.loseConnection()

    def failed(self, why: str) -> None:
        if " 503 " in f"{why} ":
            self.storm.refused += 1

    def connectionLost(self, reason: Any = None) -> None:
        self.storm.lost(self.index)


def _router(config: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "router.cli", "start", "-c", str(config)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "started in" in log.read_text():
            return proc
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.02)
    raise RuntimeError("the router did not start")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _refusals(port: int) -> dict:
    """courtyard_refusals_total of the admission limits (realm ""), from the node's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith('courtyard_refusals_total{realm="",'):
            found[line.split('reason="')[1].split('"')[0]] = int(float(line.split()[-1]))
    return found


def run(n: int, limits: dict, work: Path) -> dict:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = work / "storm.yaml"
    config.write_text(yaml.safe_dump({"listeners": [{"port": port}], "limits": {"max_pending_connections": 100_000,
                                                                               **limits},
                                      "admin": {"data_dir": None}, "shutdown": {"grace_period": 1.0}}))
    storm = Storm(f"ws://127.0.0.1:{port}/ws", n)
    result: dict = {"clients": n, "limits": limits}
    state: dict = {"proc": _router(config, work / "a.log")}

    def wait(cond, timeout: float):
        deadline = time.monotonic() + timeout

        def check():
            if cond() or time.monotonic() > deadline:
                poll.stop()

        poll = task.LoopingCall(check)
        return poll.start(0.01)

    async def main() -> None:
        for i in range(n):  # the steady state before the deploy, joined gradually
            storm.connect(i)
            if i % 100 == 99:
                await task.deferLater(reactor, 0.05, lambda: None)
        await wait(lambda: len(storm.joined) == n, 120)
        result["joined_before"] = len(storm.joined)
        storm.attempts = storm.refused = 0
        old = state["proc"]
        old.send_signal(signal.SIGTERM)  # the deploy: every client is told GOODBYE and reconnects
        while old.poll() is None:
            await task.deferLater(reactor, 0.01, lambda: None)
        state["proc"] = proc = _router(config, work / "b.log")
        t0 = time.monotonic()
        peak = [0.0]

        def sample():
            peak[0] = max(peak[0], _peak_rss_mb(proc.pid))
            return len(storm.joined) == n

        await wait(sample, 300)
        result["seconds_until_all_back"] = round(time.monotonic() - t0, 2)
        result["all_back"] = len(storm.joined) == n
        result["peak_rss_mb"] = round(max(peak[0], _peak_rss_mb(proc.pid)), 1)
        result["attempts"] = storm.attempts
        result["refused_503"] = storm.refused
        result["refused_by_router"] = await threads.deferToThread(_refusals, port)
        reactor.stop()

    def go() -> None:
        d = defer.ensureDeferred(main())
        d.addErrback(lambda f: (result.setdefault("error", f.getErrorMessage()), reactor.stop()))

    reactor.callWhenRunning(go)
    try:
        reactor.run()
    finally:
        proc = state["proc"]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--limits", type=json.loads, default={}, help='admission limits as JSON, e.g. '
                   '\'{"connections_per_second": 500}\'')
    args = p.parse_args(argv)
    raise_nofile()
    with tempfile.TemporaryDirectory() as work:
        result = run(args.clients, args.limits, Path(work))
    print(json.dumps(result))
    return 0 if result.get("all_back") else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
