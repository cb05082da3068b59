"""A cross-node soak (issue 23): two real `courtyard start` nodes on one real redis-server — node A a
single process, node B `--workers 2` — with RPC, pub/sub and session churn spread over them for
`--seconds`; in the middle node A is stalled (SIGSTOP past its node_timeout, then SIGCONT) and, later,
Redis is restarted. Reports errors (by URI), unanswered calls, missing events, tracebacks in the
routers' logs, and RSS start/peak/end per process; exits 1 on a traceback or an unanswered call.

Run through `scripts/soak` (it sets up .venv); loopback only; every process it starts it stops by PID.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig, PublishOptions
from twisted.internet import defer, endpoints, reactor, task
from twisted.python.failure import Failure

CALL_TIMEOUT = 10.0  # seconds: a call not answered by then is "unanswered"
IN_FLIGHT = 4  # calls in flight per caller
FAULT_MARGIN = 4.0  # seconds around a fault whose lost events are the fault's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Procs:
    """The redis-server and the two nodes, started and stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis_port = free_port()
        self.redis: subprocess.Popen | None = None
        self.nodes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.logs: dict[str, Path] = {}

    def start_redis(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("soak: redis-server is not installed")
        log = open(self.workdir / "redis.log", "a")
        self.redis = subprocess.Popen([exe, "--save", "", "--appendonly", "no", "--port", str(self.redis_port),
                                       "--bind", "127.0.0.1", "--dir", str(self.workdir)],
                                      stdout=log, stderr=subprocess.STDOUT)
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("soak: redis-server did not answer")

    def stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait(10)

    def start_node(self, name: str, workers: int) -> None:
        port = free_port()
        config = {"listeners": [{"port": port}], "admin": {"data_dir": None}, "shutdown": {"grace_period": 2},
                  "node": {"workers": workers},
                  "cluster": {"redis": f"redis://127.0.0.1:{self.redis_port}/0", "node_id": name,
                              "heartbeat": 0.5, "node_timeout": 3.0}}
        path = self.workdir / f"{name}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.logs[name] = self.workdir / f"{name}.log"
        log = open(self.logs[name], "w")
        self.nodes[name] = subprocess.Popen([sys.executable, "-m", "router.cli", "start", "-c", str(path)],
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.ports[name] = port
        ready = "all 2 workers serving" if workers > 1 else "listening for WAMP"
        deadline = time.monotonic() + 30
        while ready not in self.logs[name].read_text():
            if self.nodes[name].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"soak: node {name} did not start:\n{self.logs[name].read_text()[-3000:]}")
            time.sleep(0.05)

    def pids(self) -> dict[str, int]:
        found = {}
        for name, proc in self.nodes.items():
            if proc.poll() is None:
                found[name] = proc.pid
                for i, child in enumerate(sorted(children(proc.pid))):
                    found[f"{name}/worker{i}"] = child
        if self.redis is not None and self.redis.poll() is None:
            found["redis"] = self.redis.pid
        return found

    def stop(self) -> None:
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.nodes.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.stop_redis()


class _Client(ApplicationSession):
    def __init__(self, config, joined: defer.Deferred, lost: defer.Deferred) -> None:
        super().__init__(config)
        self._joined, self.lost = joined, lost

    def onJoin(self, details) -> None:
        if not self._joined.called:
            self._joined.callback(self)

    def onLeave(self, details) -> None:
        if not self._joined.called:
            self._joined.errback(ConnectionError(str(details.reason)))
        self.disconnect()

    def onDisconnect(self) -> None:
        if not self._joined.called:
            self._joined.errback(ConnectionError("disconnected"))
        if not self.lost.called:
            self.lost.callback(None)


async def connect(port: int) -> _Client:
    joined, lost = defer.Deferred(), defer.Deferred()
    factory = WampWebSocketClientFactory(lambda: _Client(ComponentConfig("realm1"), joined, lost),
                                         url=f"ws://127.0.0.1:{port}/ws")
    await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(factory)
    joined.addTimeout(10, reactor)
    return await joined


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


def within(d: defer.Deferred, seconds: float) -> defer.Deferred:
    """`d`'s outcome, or TimeoutError after `seconds`, without cancelling `d` (autobahn's canceller
    fails on a session whose transport has gone)."""
    out: defer.Deferred = defer.Deferred()

    def settle(result: object) -> None:
        if not out.called:
            (out.errback if isinstance(result, Failure) else out.callback)(result)

    d.addBoth(settle)
    timer = reactor.callLater(seconds, lambda: out.called or out.errback(defer.TimeoutError()))
    out.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
    return out


class Soak:
    def __init__(self, procs: Procs, seconds: float, faults: bool = True) -> None:
        self.procs = procs
        self.with_faults = faults
        self.seconds = seconds
        self.t0 = time.monotonic()
        self.running = True
        self.counts: Counter = Counter()
        self.errors: Counter = Counter()
        self.faults: list[tuple[float, float, str]] = []
        self.rss: dict[str, list[int]] = {}
        self.published: dict[int, float] = {}  # seq -> when (acknowledged with PUBLISHED)
        self.refused: set[int] = set()  # seq answered with an ERROR: known not to reach every node
        self.received: dict[str, set[int]] = {}
        self.window: dict[str, list[float]] = {}  # subscriber -> [subscribed since, until]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def sample(self) -> None:
        for name, pid in self.procs.pids().items():
            kb = rss_kb(pid)
            if kb is not None:
                self.rss.setdefault(name, []).append(kb)

    async def session(self, node: str) -> _Client:
        while True:
            try:
                return await connect(self.procs.ports[node])
            except Exception:  # noqa: BLE001 - a node stalled or restarting: try again
                self.counts["connect retries"] += 1
                await sleep(0.5)

    async def callee(self, node: str, j: int) -> None:
        while self.running:
            s = await self.session(node)
            try:
                await s.register(lambda x: x, f"soak.rpc.{node}.{j}")
            except ApplicationError as e:
                self.errors[f"register {e.error}"] += 1
                s.leave()
                await sleep(0.5)
                continue
            await s.lost
            self.counts["callee reconnects"] += 1

    async def caller(self, node: str, target: str, j: int) -> None:
        while self.running:
            s = await self.session(node)
            workers = [defer.ensureDeferred(self._calls(s, f"soak.rpc.{target}.{j}")) for _ in range(IN_FLIGHT)]
            await defer.DeferredList(workers)
            if s.is_connected():
                s.leave()

    async def _calls(self, s: _Client, procedure: str) -> None:
        seq = 0
        while self.running and s.is_connected():
            seq += 1
            try:
                result = await within(s.call(procedure, seq), CALL_TIMEOUT)
                self.counts["calls ok" if result == seq else "calls wrong result"] += 1
            except defer.TimeoutError:  # unanswered on a live session; else lost with its connection
                self.counts["calls unanswered" if s.is_connected() else "calls lost with the connection"] += 1
                if not s.is_connected():
                    return
            except ApplicationError as e:
                self.errors[f"call {e.error}"] += 1
                await sleep(0.05)
            except Exception as e:  # noqa: BLE001 - the connection went (a stalled node closes its sessions)
                self.errors[f"call {type(e).__name__}"] += 1
                return

    async def subscriber(self, node: str, name: str) -> None:
        got = self.received.setdefault(name, set())
        while self.running:
            s = await self.session(node)
            await s.subscribe(lambda seq: got.add(seq), "soak.events")
            self.window.setdefault(name, [self.now() + 1.0, 0.0])  # interest takes a moment to spread
            await s.lost
            self.counts["subscriber reconnects"] += 1

    async def publisher(self, node: str) -> None:
        seq = 0
        while self.running:
            s = await self.session(node)
            while self.running and s.is_connected():
                seq += 1
                try:
                    await s.publish("soak.events", seq, options=PublishOptions(acknowledge=True))
                    self.published[seq] = self.now()
                except ApplicationError as e:
                    self.errors[f"publish {e.error}"] += 1
                    self.refused.add(seq)
                except Exception as e:  # noqa: BLE001
                    self.errors[f"publish {type(e).__name__}"] += 1
                    break
                await sleep(0.02)

    async def churn(self, node: str, k: int) -> None:
        n = 0
        while self.running:
            n += 1
            s = None
            try:
                s = await connect(self.procs.ports[node])
                await s.subscribe(lambda *a: None, f"soak.churn.{node}.{k}.{n}")
                await s.register(lambda n=n: n, f"soak.churn.{node}.{k}.{n}")
                await within(s.call(f"soak.churn.{node}.{k}.{n}"), CALL_TIMEOUT)
                s.leave()
                await s.lost
                self.counts["churn rounds"] += 1
            except defer.TimeoutError:
                alive = s is not None and s.is_connected()
                self.counts["churn calls unanswered" if alive else "churn calls lost with the connection"] += 1
            except ApplicationError as e:
                self.errors[f"churn {e.error}"] += 1
            except Exception as e:  # noqa: BLE001
                self.errors[f"churn {type(e).__name__}"] += 1
                await sleep(0.5)

    async def faults_run(self) -> None:
        if not self.with_faults:
            return
        await sleep(self.seconds / 3)
        a = self.procs.nodes["a"]
        start = self.now()
        a.send_signal(signal.SIGSTOP)  # past node_timeout (3 s): the others take it for dead
        await sleep(5.0)
        a.send_signal(signal.SIGCONT)
        self.faults.append((start, self.now(), "node a stalled 5 s"))
        await sleep(self.seconds / 3 - 5.0)
        start = self.now()
        self.procs.stop_redis()
        await sleep(2.0)
        self.procs.start_redis()
        self.faults.append((start, self.now(), "redis restarted (2 s away)"))

    def in_fault(self, t: float) -> bool:
        return any(s - FAULT_MARGIN <= t <= e + FAULT_MARGIN for s, e, _ in self.faults)

    async def run(self) -> dict:
        sampler = task.LoopingCall(self.sample)
        sampler.start(1.0)
        jobs = []
        for j in range(3):
            jobs.append(self.callee("b", j))
            jobs.append(self.callee("a", j))
        await sleep(2.0)  # the registrations spread
        for j in range(3):
            jobs.append(self.caller("a", "b", j))  # across nodes, both ways
            jobs.append(self.caller("b", "a", j))
        jobs += [self.subscriber("b", "b1"), self.subscriber("b", "b2"), self.subscriber("a", "a1")]
        await sleep(1.0)
        jobs.append(self.publisher("a"))
        jobs += [self.churn(n, k) for n in ("a", "b") for k in range(2)]
        running = [defer.ensureDeferred(j) for j in jobs]
        faults = defer.ensureDeferred(self.faults_run())
        await sleep(self.seconds)
        await faults
        self.running = False
        await sleep(CALL_TIMEOUT + 1)  # calls in flight answered or counted unanswered
        sampler.stop()
        del running  # the loops end with the reactor (each checks `running`)
        return self.report()

    def report(self) -> dict:
        missing, missing_in_faults, where = 0, 0, {}
        for name, got in self.received.items():
            since = self.window.get(name, [0.0])[0]
            lost = [t for seq, t in self.published.items() if t >= since and seq not in got]
            outside = [t for t in lost if not self.in_fault(t)]
            missing += len(outside)
            missing_in_faults += len(lost) - len(outside)
            if outside:
                where[name] = f"{len(outside)} between {min(outside):.1f} and {max(outside):.1f} s"
        tracebacks = {name: path.read_text().count("Traceback") for name, path in self.procs.logs.items()}
        return {
            "seconds": self.seconds,
            "faults": [f"{what} at {s:.1f}-{e:.1f} s" for s, e, what in self.faults],
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "events published (acknowledged)": len(self.published),
            "events refused to their publisher": len(self.refused),
            "events missing outside faults": missing,
            "events missing within faults": missing_in_faults,
            "events missing outside faults, per subscriber": where,
            "tracebacks": tracebacks,
            "rss_mb start/peak/end": {name: [round(v[0] / 1024, 1), round(max(v) / 1024, 1), round(v[-1] / 1024, 1)]
                                      for name, v in sorted(self.rss.items())},
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=300.0, help="how long the load runs (default 300)")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.add_argument("--no-faults", action="store_true", help="no stall and no Redis restart (a baseline)")
    args = p.parse_args()
    if args.seconds < 20:
        raise SystemExit("soak: --seconds must be at least 20 (two faults fit in it)")
    workdir = Path(tempfile.mkdtemp(prefix="courtyard-soak-"))
    procs = Procs(workdir)
    result: dict = {}
    try:
        procs.start_redis()
        procs.start_node("a", 1)
        procs.start_node("b", 2)
        soak = Soak(procs, args.seconds, faults=not args.no_faults)

        def done(report: dict) -> None:
            result.update(report)
            reactor.stop()

        def failed(f) -> None:
            result["crash"] = f.getTraceback()
            reactor.stop()

        reactor.callWhenRunning(lambda: defer.ensureDeferred(soak.run()).addCallbacks(done, failed))
        reactor.run()
    finally:
        procs.stop()
    result["logs"] = str(workdir)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    bad = "crash" in result or sum(result.get("tracebacks", {}).values()) or \
        result.get("counts", {}).get("calls unanswered", 0) or result.get("counts", {}).get("churn calls unanswered", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
