"""The scenarios. Each drives a target (the router, or the ceiling server) with load processes for a
bounded time and reads the target's own CPU time from /proc, so its cost per message is known even
when the clients are the bottleneck.

Units: a "routed message" is one message in and one out (the router's CALL→INVOCATION is one,
YIELD→RESULT another; the ceiling's echo is one). Pub/sub counts delivered EVENTs; churn counts
sessions opened and closed; memory counts idle sessions.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import checks, matching, procs
from bench.procs import Group, LoadProc, Server, cpu_seconds, rss_bytes

NCPU = os.cpu_count() or 1
SATURATED = 0.85  # a single-threaded process busy this share of the time has no slack left


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Options:
    seconds: float = 5.0
    warmup: float = 1.0
    drain: float = 0.2  # after T1, replies still in flight may come back before the client exits
    realm: str = "realm1"
    callers: int = 2
    window: int = 20
    payload: int = 32
    fanouts: list[int] = field(default_factory=lambda: [8, 100])
    pub_window: int = 20
    sub_procs: int = 2
    churn_procs: int = 2
    churn_concurrency: int = 10
    churn_max: int = 20_000  # sessions per churn process and run: bounds ephemeral port use
    memory_sessions: list[int] = field(default_factory=lambda: [2000, 10_000])
    scaling_sessions: list[int] = field(default_factory=lambda: [10, 1000, 10_000])
    scaling_fanout: int = 8
    startup_runs: int = 3
    router_profile: str = "open"  # procs.PROFILES
    cluster: str | None = None  # a Redis URL: routers run as cluster nodes (--cluster)
    redis_pid: int | None = None  # that redis-server's PID: its CPU per message is reported too
    shards: list[str] = field(default_factory=list)  # the other shards' URLs (--shards N): cluster.redis's list
    shard_pids: list[int] = field(default_factory=list)  # their redis-servers' PIDs, each one's CPU reported
    workers: int = 1  # the router runs with --workers N (N > 1: on `cluster`)
    setup_timeout: float = 180.0


@dataclass
class Target:
    """What is measured: a URL base (ws://host:port) with its paths, and the PID whose CPU counts."""

    base: str
    pid: int
    ceiling: bool  # the bare server: /echo, /pub, /sub instead of one WAMP path
    path: str = "/ws"

    def url(self, kind: str = "echo") -> str:
        return f"{self.base}/{kind}" if self.ceiling else f"{self.base}{self.path}"


@dataclass
class Window:
    """What happened between T0 and T1: wall time, the target's CPU, each client's CPU and answer."""

    wall: float
    target_cpu: float
    client_cpu: list[float]
    results: list[dict]
    redis_cpu: float | None = None  # the cluster's redis-servers' CPU in the window, if the bench runs them
    shard_cpu: list[float] = field(default_factory=list)  # each shard's part of it, the home shard first

    @property
    def target_util(self) -> float:
        return self.target_cpu / self.wall

    @property
    def client_utils(self) -> list[float]:
        return [c / self.wall for c in self.client_cpu]

    def saturated(self) -> str:
        cu = self.client_utils
        if self.target_util >= SATURATED:
            return "router"
        if cu and max(cu) >= SATURATED:
            return "clients"
        if self.target_util + sum(cu) >= SATURATED * NCPU:
            return "machine"
        return "no"


def settle(pid: int, quiet: float = 0.05, step: float = 0.15, limit: float = 30.0) -> None:
    """Wait until the process is (almost) idle, e.g. after thousands of sessions left, so the next
    window measures only its own load. Bounded by `limit` seconds."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(step)
        now = cpu_seconds(pid)
        if now - last <= quiet * step:
            return
        last = now


def _cpu(pids: int | list[int]) -> float:
    """CPU seconds of a process, or summed over several (a cluster's nodes, and its redis-server)."""
    return sum(cpu_seconds(p) for p in pids) if isinstance(pids, list) else cpu_seconds(pids)


def measure(pid: int | list[int], load: list[LoadProc], opts: Options) -> Window:
    """Tell every load process to go, then sample CPU times at T0 and T1 (monotonic clock)."""
    t0 = time.monotonic() + opts.warmup
    t1 = t0 + opts.seconds
    for p in load:
        p.tell(f"go {t0!r} {t1!r}")
    time.sleep(max(0.0, t0 - time.monotonic()))
    redis = [opts.redis_pid, *opts.shard_pids] if opts.redis_pid else []
    r0 = [cpu_seconds(p) for p in redis]
    w0, c0, l0 = time.monotonic(), _cpu(pid), [cpu_seconds(p.pid) for p in load]
    time.sleep(max(0.0, t1 - time.monotonic()))
    w1, c1, l1 = time.monotonic(), _cpu(pid), [cpu_seconds(p.pid) for p in load]
    shards = [cpu_seconds(p) - before for p, before in zip(redis, r0, strict=True)]
    deadline = t1 + opts.drain + 15
    results = [p.read(deadline)["result"] for p in load]
    return Window(w1 - w0, c1 - c0, [b - a for a, b in zip(l0, l1, strict=True)], results,
                  sum(shards) if redis else None, shards)


def _row(name: str, ser: str, w: Window | None, rate: float, unit: str, cost: float, cost_unit: str,
         **extra: Any) -> dict:
    row = {"scenario": name, "serializer": ser, "rate": round(rate, 1), "rate_unit": unit,
           "cost_us": round(cost, 2), "cost_unit": cost_unit}
    if w is not None:
        row.update(router_util=round(w.target_util, 3), clients_util=[round(u, 3) for u in w.client_utils],
                   saturated=w.saturated(), wall=round(w.wall, 3), cpu=round(w.target_cpu, 3))
        if w.redis_cpu is not None and not name.startswith("ceiling"):  # Redis CPU per unit, beside the router's
            row["redis_us"] = round(1e6 * w.redis_cpu / max(rate * w.wall, 1), 2)
            if len(w.shard_cpu) > 1:  # per shard, the home shard first
                row["redis_us_by_shard"] = [round(1e6 * c / max(rate * w.wall, 1), 2) for c in w.shard_cpu]
    row.update(extra)
    return row


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- load shapes, run against a router or the ceiling ------------------------------------------------
def run_rpc(t: Target, ser: str, opts: Options, workdir: Path, procedure: str = "bench.echo",
            callee: bool = True, callee_at: Target | None = None, cpu_of: list[int] | None = None) -> dict:
    """One callee (router only; none with `callee` False: the router answers, e.g. a session
    process), `callers` caller processes with `window` calls in flight each. `callee_at`: the callee
    on another node of the cluster; `cpu_of`: the PIDs whose CPU counts."""
    with Group(workdir) as g:
        common = {"serializer": ser, "realm": opts.realm, "drain": opts.drain, "payload": opts.payload,
                  "procedure": procedure}
        setup = [] if t.ceiling or not callee else [g.spawn("callee", url=(callee_at or t).url(), **common)]
        callers = [g.spawn("caller", url=t.url("echo"), window=opts.window, **common) for _ in range(opts.callers)]
        g.ready(setup + callers, opts.setup_timeout)  # callers only call after "go", when the callee is there
        w = measure(cpu_of or t.pid, setup + callers, opts)
    res = w.results[len(setup):]
    calls = sum(r["count"] for r in res)
    errors = sum(r["errors"] for r in res)
    lat = [x for r in res for x in r["latencies"]]
    msgs = calls if t.ceiling or not callee else 2 * calls
    return {"window": w, "calls": calls, "errors": errors, "msgs": msgs,
            "rate": calls / w.wall, "cost": 1e6 * w.target_cpu / max(msgs, 1),
            "p50_ms": 1e3 * _percentile(lat, 0.50), "p99_ms": 1e3 * _percentile(lat, 0.99)}


def run_pubsub(t: Target, ser: str, opts: Options, workdir: Path, fanout: int, topic: str = "bench.topic",
               subscribers_at: Target | None = None, cpu_of: list[int] | None = None) -> dict:
    """`fanout` subscriber sessions over up to `sub_procs` processes; one publisher, acknowledged.
    `subscribers_at`: the subscribers on another node of the cluster; `cpu_of`: the PIDs whose CPU
    counts (both nodes)."""
    with Group(workdir) as g:
        common = {"serializer": ser, "realm": opts.realm, "drain": opts.drain, "payload": opts.payload,
                  "topic": topic}
        nproc = max(1, min(opts.sub_procs, fanout))
        shares = [fanout // nproc + (1 if i < fanout % nproc else 0) for i in range(nproc)]
        subs = [g.spawn("subscriber", url=(subscribers_at or t).url("sub"), sessions=n, **common) for n in shares]
        pub = g.spawn("publisher", url=t.url("pub"), window=opts.pub_window, **common)
        g.ready(subs + [pub], opts.setup_timeout)  # the publisher only publishes after "go"
        if subscribers_at is not None:
            time.sleep(0.5)  # the subscriptions' news reaches the publisher's node
        w = measure(cpu_of or t.pid, subs + [pub], opts)
    events = sum(r["count"] for r in w.results[:-1])
    acks = w.results[-1]["count"]
    return {"window": w, "events": events, "publishes": acks, "rate": events / w.wall,
            "cost": 1e6 * w.target_cpu / max(events, 1),
            "delivered_share": round(events / max(1, acks * fanout), 4),
            "errors": w.results[-1]["errors"]}


def run_churn(t: Target, ser: str, opts: Options, workdir: Path) -> dict:
    with Group(workdir) as g:
        load = [g.spawn("churn", url=t.url("echo"), serializer=ser, realm=opts.realm, drain=opts.drain,
                        concurrency=opts.churn_concurrency, max_cycles=opts.churn_max)
                for _ in range(opts.churn_procs)]
        g.ready(load, opts.setup_timeout)
        w = measure(t.pid, load, opts)
    sessions = sum(r["count"] for r in w.results)
    return {"window": w, "sessions": sessions, "rate": sessions / w.wall,
            "cost": 1e6 * w.target_cpu / max(sessions, 1), "errors": sum(r["errors"] for r in w.results)}


def hold_idle(g: Group, t: Target, ser: str, opts: Options, n: int, offset: int = 0,
              tables: bool = False) -> LoadProc:
    """A process holding `n` idle sessions (each with a registration and a subscription if `tables`)."""
    p = g.spawn("idle", url=t.url("echo"), serializer=ser, realm=opts.realm, sessions=n, offset=offset,
                register=tables, subscribe=tables, concurrency=50, max_life=3600)
    g.ready([p], opts.setup_timeout)
    return p


def run_memory(t: Target, ser: str, opts: Options, workdir: Path) -> dict:
    """RSS before and after the idle session counts in `memory_sessions` (ascending)."""
    settle(t.pid)
    time.sleep(0.3)
    before = rss_bytes(t.pid)
    redis_before = procs.redis_info(opts.cluster, "used_memory") if opts.cluster else None
    points = []
    with Group(workdir) as g:
        held = 0
        for n in sorted(opts.memory_sessions):
            hold_idle(g, t, ser, opts, n - held, offset=held)
            held = n
            settle(t.pid)
            time.sleep(0.3)
            rss = rss_bytes(t.pid)
            points.append({"sessions": n, "rss": rss, "kib_per_session": (rss - before) / n / 1024})
            if redis_before is not None:  # the node's mirror of these sessions in Redis
                points[-1]["redis_kib_per_session"] = round(
                    (procs.redis_info(opts.cluster, "used_memory") - redis_before) / n / 1024, 2)
    return {"rss_before": before, "points": points}


# -- scenarios: each returns rows for the report ------------------------------------------------------
class Bench:
    """One serializer's run: a router (started here or given), the ceiling server, the options."""

    def __init__(self, ser: str, opts: Options, workdir: Path, url: str | None = None,
                 router_pid: int | None = None) -> None:
        self.ser = ser
        self.opts = opts
        self.workdir = workdir
        self.ceilings: dict[str, dict] = {}
        self._router: Server | None = None
        self._ceiling: Server | None = None
        if url is not None:
            base, _, path = url.partition("://")[2].partition("/")
            self.router = Target(f"ws://{base}", router_pid, False, "/" + path)
            self.owns_router = False
        else:
            self._router = procs.start_router(workdir, opts.realm, f"router-{ser}", opts.router_profile,
                                              opts.cluster, opts.workers, shards=opts.shards).wait()
            self.router = Target(f"ws://127.0.0.1:{self._router.port}", self._router.pid, False)
            self.owns_router = True

    def close(self) -> None:
        for s in (self._router, self._ceiling, getattr(self, "_b", None)):
            if s is not None:
                s.stop()

    def ceiling(self) -> Target:
        if self._ceiling is None or not self._ceiling.alive():
            self._ceiling = procs.start_ceiling(self.workdir).wait()
        return Target(f"ws://127.0.0.1:{self._ceiling.port}", self._ceiling.pid, True)

    def _check_router(self) -> None:
        if self.owns_router and not self._router.alive():
            raise RuntimeError(f"the router exited:\n{self._router.log_tail()}")

    # -- the ceiling, per load shape ---------------------------------------------------------------
    def ceiling_for(self, shape: str) -> dict:
        if shape not in self.ceilings:
            say(f"  [{self.ser}] ceiling: {shape}")
            c = self.ceiling()
            settle(c.pid)
            if shape == "echo":
                self.ceilings[shape] = run_rpc(c, self.ser, self.opts, self.workdir)
            elif shape.startswith("fanout-"):
                self.ceilings[shape] = run_pubsub(c, self.ser, self.opts, self.workdir, int(shape[7:]))
            elif shape == "churn":
                self.ceilings[shape] = run_churn(c, self.ser, self.opts, self.workdir)
            elif shape == "memory":
                # A fresh server, like the router's memory run: earlier load leaves freed memory to reuse.
                self._ceiling.stop()
                self._ceiling = None
                self.ceilings[shape] = run_memory(self.ceiling(), self.ser, self.opts, self.workdir)
        return self.ceilings[shape]

    def scenario_ceiling(self) -> list[dict]:
        rows = []
        e = self.ceiling_for("echo")
        rows.append(_row("ceiling-echo", self.ser, e["window"], e["rate"], "msgs/s", e["cost"], "us/msg",
                         p50_ms=round(e["p50_ms"], 3), p99_ms=round(e["p99_ms"], 3)))
        for k in self.opts.fanouts:
            f = self.ceiling_for(f"fanout-{k}")
            rows.append(_row(f"ceiling-fanout-{k}", self.ser, f["window"], f["rate"], "msgs/s", f["cost"],
                             "us/msg", delivered_share=f["delivered_share"]))
        c = self.ceiling_for("churn")
        rows.append(_row("ceiling-churn", self.ser, c["window"], c["rate"], "conns/s", c["cost"], "us/conn"))
        m = self.ceiling_for("memory")
        for p in m["points"]:
            rows.append(_row(f"ceiling-memory@{p['sessions']}", self.ser, None, 0, "", p["kib_per_session"],
                             "KiB/conn", rss_before=m["rss_before"], rss=p["rss"]))
        return rows

    # -- the router ----------------------------------------------------------------------------------
    def scenario_rpc(self) -> list[dict]:
        ceil = self.ceiling_for("echo")
        say(f"  [{self.ser}] rpc")
        settle(self.router.pid)
        r = run_rpc(self.router, self.ser, self.opts, self.workdir)
        self._check_router()
        return [_row("rpc", self.ser, r["window"], r["rate"], "calls/s", r["cost"], "us/msg",
                     p50_ms=round(r["p50_ms"], 3), p99_ms=round(r["p99_ms"], 3),
                     ceiling_us=round(ceil["cost"], 2), ratio=round(r["cost"] / ceil["cost"], 3),
                     errors=r["errors"])]

    def scenario_pubsub(self) -> list[dict]:
        rows = []
        echo = self.ceiling_for("echo")
        for k in self.opts.fanouts:
            ceil = self.ceiling_for(f"fanout-{k}")
            say(f"  [{self.ser}] pubsub fan-out {k}")
            settle(self.router.pid)
            r = run_pubsub(self.router, self.ser, self.opts, self.workdir, k)
            self._check_router()
            rows.append(_row(f"pubsub-{k}", self.ser, r["window"], r["rate"], "events/s", r["cost"], "us/event",
                             ceiling_us=round(ceil["cost"], 2), ratio=round(r["cost"] / ceil["cost"], 3),
                             ratio_to_echo=round(r["cost"] / echo["cost"], 3), publishes=r["publishes"],
                             delivered_share=r["delivered_share"], errors=r["errors"]))
        return rows

    def second_node(self) -> tuple[Target, int | None]:
        """Node B of the cluster (started once), and the redis-server's PID."""
        if self.opts.cluster is None or not self.owns_router:
            raise RuntimeError("the cross scenario needs --cluster (and a router of the bench's own)")
        if getattr(self, "_b", None) is None:
            self._b = procs.start_router(self.workdir, self.opts.realm, self._name_b(),
                                         self.opts.router_profile, self.opts.cluster, shards=self.opts.shards).wait()
        return Target(f"ws://127.0.0.1:{self._b.port}", self._b.pid, False), procs.redis_pid(self.opts.cluster)

    def _name_b(self) -> str:
        """Node B's id: over several shards, one whose data channel is on another shard than A's, so
        that what crosses is spread (bus.shard_of)."""
        from router.cluster.bus import shard_of

        n, a = 1 + len(self.opts.shards), shard_of(f"router-{self.ser}", 1 + len(self.opts.shards))
        return next(name for i in range(1000) if shard_of(name := f"router-{self.ser}-b{i or ''}", n) != a or n == 1)

    def scenario_cross(self) -> list[dict]:
        """Across two nodes: publisher on A, subscribers on B; router CPU summed over both nodes per
        delivered event, against the same load on one node (both in this run), Redis CPU alongside."""
        b, redis = self.second_node()
        rows = []
        for k in self.opts.fanouts:
            say(f"  [{self.ser}] pubsub fan-out {k}, one node then across two")
            settle(self.router.pid)
            local = run_pubsub(self.router, self.ser, self.opts, self.workdir, k, cpu_of=[self.router.pid, b.pid])
            settle(self.router.pid)
            settle(b.pid)
            before = cpu_seconds(redis) if redis else 0.0
            cross = run_pubsub(self.router, self.ser, self.opts, self.workdir, k, subscribers_at=b,
                               cpu_of=[self.router.pid, b.pid])
            redis_us = 1e6 * (cpu_seconds(redis) - before) / max(cross["publishes"], 1) if redis else None
            self._check_router()
            rows.append(_row(f"cross-pubsub-{k}", self.ser, cross["window"], cross["rate"], "events/s",
                             cross["cost"], "us/event", local_us=round(local["cost"], 2),
                             ratio_to_local=round(cross["cost"] / max(local["cost"], 1e-9), 3),
                             redis_us_per_publish=None if redis_us is None else round(redis_us, 2),
                             publishes=cross["publishes"], delivered_share=cross["delivered_share"],
                             errors=cross["errors"]))
        rows.append(self._cross_rpc(b, redis))
        return rows

    def _cross_rpc(self, b: Target, redis: int | None) -> dict:
        """The callee on B, the callers on A: router CPU summed over both nodes per routed message,
        against callee and callers both on A (both in this run), Redis CPU alongside."""
        say(f"  [{self.ser}] rpc, one node then across two")
        settle(self.router.pid)
        local = run_rpc(self.router, self.ser, self.opts, self.workdir, cpu_of=[self.router.pid, b.pid])
        settle(self.router.pid)
        settle(b.pid)
        before = cpu_seconds(redis) if redis else 0.0
        cross = run_rpc(self.router, self.ser, self.opts, self.workdir, callee_at=b, cpu_of=[self.router.pid, b.pid])
        redis_us = 1e6 * (cpu_seconds(redis) - before) / max(cross["msgs"], 1) if redis else None
        self._check_router()
        return _row("cross-rpc", self.ser, cross["window"], cross["rate"], "calls/s", cross["cost"], "us/msg",
                    p50_ms=round(cross["p50_ms"], 3), p99_ms=round(cross["p99_ms"], 3),
                    local_us=round(local["cost"], 2), ratio_to_local=round(cross["cost"] / max(local["cost"], 1e-9), 3),
                    redis_us_per_msg=None if redis_us is None else round(redis_us, 2), errors=cross["errors"])

    def scenario_churn(self) -> list[dict]:
        ceil = self.ceiling_for("churn")
        say(f"  [{self.ser}] churn")
        settle(self.router.pid)
        r = run_churn(self.router, self.ser, self.opts, self.workdir)
        self._check_router()
        return [_row("churn", self.ser, r["window"], r["rate"], "sessions/s", r["cost"], "us/session",
                     ceiling_us=round(ceil["cost"], 2), ratio=round(r["cost"] / ceil["cost"], 3),
                     errors=r["errors"])]

    def scenario_memory(self) -> list[dict]:
        ceil = self.ceiling_for("memory")
        say(f"  [{self.ser}] memory")
        extra: dict[str, Any] = {}
        if self.owns_router:
            # Start-up to listening, and a fresh router so earlier load does not hide allocations.
            times = []
            fresh = None
            for i in range(max(1, self.opts.startup_runs)):
                if fresh is not None:
                    fresh.stop()
                fresh = procs.start_router(self.workdir, self.opts.realm, f"router-mem-{self.ser}-{i}",
                                           cluster=self.opts.cluster, workers=self.opts.workers,
                                           shards=self.opts.shards).wait()
                times.append(fresh.startup)
            extra["startup_s"] = round(statistics.median(times), 3)
            extra["startup_runs_s"] = [round(x, 3) for x in times]
            target = Target(f"ws://127.0.0.1:{fresh.port}", fresh.pid, False)
        else:
            fresh, target = None, self.router
        try:
            m = run_memory(target, self.ser, self.opts, self.workdir)
        finally:
            if fresh is not None:
                fresh.stop()
        rows = []
        idle_mb = m["rss_before"] / 2**20
        for p, cp in zip(m["points"], ceil["points"], strict=True):
            rows.append(_row(f"memory@{p['sessions']}", self.ser, None, 0, "", p["kib_per_session"],
                             "KiB/session", ceiling_us=round(cp["kib_per_session"], 2),
                             ratio=round(p["kib_per_session"] / cp["kib_per_session"], 3),
                             idle_rss_mb=round(idle_mb, 1), rss_mb=round(p["rss"] / 2**20, 1), **extra,
                             **({"redis_kib_per_session": p["redis_kib_per_session"]}
                                if "redis_kib_per_session" in p else {})))
        return rows

    def scenario_process(self) -> list[dict]:
        """Session processes (issue 16): a courtyard.process.call round trip against a routed CALL to an
        external callee, on the same router (every session has an idle process there), in µs of router
        CPU per call; then KiB per idle session on fresh routers with and without a process each."""
        opts = self.opts
        config = {"class": "bench.echo_process:Echo", "start": "on_join", "mailbox": 10_000}
        rows = []
        router = procs.start_router(self.workdir, opts.realm, f"router-proc-{self.ser}", opts.router_profile,
                                    session_process=config).wait()
        try:
            target = Target(f"ws://127.0.0.1:{router.port}", router.pid, False)
            results = {}
            for name, procedure, callee in (("routed", "bench.echo", True),
                                            ("process", "courtyard.process.call", False)):
                say(f"  [{self.ser}] process: {name} call")
                settle(target.pid)
                r = results[name] = run_rpc(target, self.ser, opts, self.workdir, procedure, callee)
                if not router.alive():
                    raise RuntimeError(f"the router exited:\n{router.log_tail()}")
                rows.append(_row(f"process-call-{name}", self.ser, r["window"], r["rate"], "calls/s",
                                 1e6 * r["window"].target_cpu / max(r["calls"], 1), "us/call",
                                 p50_ms=round(r["p50_ms"], 3), p99_ms=round(r["p99_ms"], 3), errors=r["errors"]))
            rows[-1]["vs_routed"] = round(rows[-1]["cost_us"] / max(rows[0]["cost_us"], 1e-9), 3)
        finally:
            router.stop()
        memory = {}
        for name, sp in (("plain", None), ("process", config)):
            say(f"  [{self.ser}] process: memory, {name}")
            fresh = procs.start_router(self.workdir, opts.realm, f"router-procmem-{name}-{self.ser}",
                                       session_process=sp).wait()
            try:
                memory[name] = run_memory(Target(f"ws://127.0.0.1:{fresh.port}", fresh.pid, False), self.ser,
                                          opts, self.workdir)
            finally:
                fresh.stop()
        for p, q in zip(memory["plain"]["points"], memory["process"]["points"], strict=True):
            rows.append(_row(f"process-memory@{p['sessions']}", self.ser, None, 0, "",
                             q["kib_per_session"] - p["kib_per_session"], "KiB/process",
                             kib_per_session=round(p["kib_per_session"], 2),
                             kib_per_session_with_process=round(q["kib_per_session"], 2)))
        return rows

    def scenario_scaling(self) -> list[dict]:
        echo = self.ceiling_for("echo")
        fan = self.ceiling_for(f"fanout-{self.opts.scaling_fanout}")
        rows: list[dict] = []
        base: dict[str, float] = {}
        offset = 0  # URIs of each level's idle registrations are new: the last level's may still be leaving
        for n in self.opts.scaling_sessions:
            say(f"  [{self.ser}] scaling: {n} idle sessions with a registration and a subscription each")
            with Group(self.workdir) as g:
                hold_idle(g, self.router, self.ser, self.opts, n, offset=offset, tables=True)
                offset += n
                settle(self.router.pid)
                r = run_rpc(self.router, self.ser, self.opts, self.workdir)
                self._check_router()
                base.setdefault("rpc", r["cost"])
                rows.append(_row(f"scaling-rpc@{n}", self.ser, r["window"], r["rate"], "calls/s", r["cost"],
                                 "us/msg", p50_ms=round(r["p50_ms"], 3), p99_ms=round(r["p99_ms"], 3),
                                 ceiling_us=round(echo["cost"], 2), ratio=round(r["cost"] / echo["cost"], 3),
                                 vs_first=round(r["cost"] / base["rpc"], 3), idle_sessions=n))
                settle(self.router.pid)
                k = self.opts.scaling_fanout
                p = run_pubsub(self.router, self.ser, self.opts, self.workdir, k)
                self._check_router()
                base.setdefault("pubsub", p["cost"])
                rows.append(_row(f"scaling-pubsub-{k}@{n}", self.ser, p["window"], p["rate"], "events/s",
                                 p["cost"], "us/event", ceiling_us=round(fan["cost"], 2),
                                 ratio=round(p["cost"] / fan["cost"], 3), vs_first=round(p["cost"] / base["pubsub"], 3),
                                 idle_sessions=n, delivered_share=p["delivered_share"]))
            settle(self.router.pid)
        return rows


SCENARIOS = ["ceiling", "rpc", "pubsub", "churn", "memory", "scaling", "cross", "process", "matching", "checks"]
PER_SERIALIZER = SCENARIOS[:-2]
# `--scenarios cross` needs --cluster; `process` starts three more routers: both on request only.
DEFAULT = [s for s in SCENARIOS if s not in ("cross", "process")]


def scenario_matching(opts: Options) -> list[dict]:
    """URI matching in process (no router, no serializer): per-lookup cost at 10 and 10,000 entries."""
    say("matching (in process)")
    rows = []
    for r in matching.run(seconds=min(opts.seconds, 1.0) / 2):
        rows.append(_row(f"matching-{r['probe']}@{r['entries']}", "-", None, 0, "", r["best_us"], "us/lookup",
                         matches_us=r["matches_us"], vs_first=r["best_vs_first"],
                         matches_vs_first=r["matches_vs_first"]))
    return rows


def scenario_checks(opts: Options) -> list[dict]:
    """Authorization, rate and quota checks in process: what each adds per request; and what the
    /metrics counters add per routed call and per delivered event."""
    say("checks (in process)")
    rows = [_row(f"check-{r['check']}", "-", None, 0, "", r["us"], "us/request") for r in checks.run()]
    return rows + [_row(f"check-{r['check']}", "-", None, 0, "", r["us"], "us/" + r["check"].split("-")[-1])
                   for r in checks.counting()]


def run_all(names: list[str], serializers: list[str], opts: Options, workdir: Path, url: str | None = None,
            router_pid: int | None = None) -> list[dict]:
    rows: list[dict] = []
    if "matching" in names:
        rows.extend(scenario_matching(opts))
    if "checks" in names:
        rows.extend(scenario_checks(opts))
    names = [n for n in names if n in PER_SERIALIZER]
    for ser in serializers if names else ():
        say(f"serializer {ser}")
        b = Bench(ser, opts, workdir, url, router_pid)
        try:
            for name in names:
                rows.extend(getattr(b, f"scenario_{name}")())
        finally:
            b.close()
    return rows
