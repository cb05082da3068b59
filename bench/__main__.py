"""`python -m bench`: run the benchmark scenarios and print a table (or --json)."""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

from bench import procs, report
from bench.load import raise_nofile
from bench.procs import PROFILES
from bench.scenarios import DEFAULT, SCENARIOS, Options, run_all


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Options()
    p = argparse.ArgumentParser(prog="scripts/bench", description="Courtyard benchmark: router CPU per message "
                                "vs the bare Autobahn WebSocket ceiling, memory per session, churn, scaling.")
    p.add_argument("--scenarios", default=",".join(DEFAULT),
                   help=f"comma-separated, of {','.join(SCENARIOS)} (default: all but cross, which needs --cluster, "
                        "and process)")
    p.add_argument("--serializer", default="json,msgpack", help="comma-separated: json, msgpack")
    p.add_argument("--seconds", type=float, default=d.seconds, help="measured window per run")
    p.add_argument("--warmup", type=float, default=d.warmup, help="load before the window opens")
    p.add_argument("--url", help="measure this running router (ws://host:port/path) instead of starting one")
    p.add_argument("--router-pid", type=int, help="its PID (needed with --url: CPU and RSS come from /proc)")
    p.add_argument("--realm", default=d.realm)
    p.add_argument("--callers", type=int, default=d.callers, help="rpc caller processes")
    p.add_argument("--window", type=int, default=d.window, help="calls in flight per caller")
    p.add_argument("--payload", type=int, default=d.payload, help="characters of the one string argument")
    p.add_argument("--fanouts", type=_ints, default=d.fanouts, help="subscriber counts for pubsub")
    p.add_argument("--pub-window", type=int, default=d.pub_window, help="acknowledged publishes in flight")
    p.add_argument("--sub-procs", type=int, default=d.sub_procs, help="subscriber processes")
    p.add_argument("--churn-procs", type=int, default=d.churn_procs)
    p.add_argument("--churn-concurrency", type=int, default=d.churn_concurrency, help="per churn process")
    p.add_argument("--memory-sessions", type=_ints, default=d.memory_sessions)
    p.add_argument("--scaling-sessions", type=_ints, default=d.scaling_sessions)
    p.add_argument("--startup-runs", type=int, default=d.startup_runs)
    p.add_argument("--router-profile", choices=PROFILES, default=d.router_profile,
                   help="the router's realm: open (no per-message checks), authz (permission rules), "
                   "limits (rate and quota windows that never refuse)")
    p.add_argument("--cluster", action="store_true",
                   help="run the routers as cluster nodes on a redis-server of the bench's own (needs redis-server)")
    p.add_argument("--shards", type=int, default=1, metavar="N",
                   help="with --cluster: N redis-servers, one shard each (cluster.redis a list); Redis CPU per shard")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="start the router with --workers N (N > 1: a cluster on a redis-server of the bench's "
                   "own, as --cluster; the router's CPU and RSS are the supervisor's and its workers' summed)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--json-file", help="also write the JSON to this file")
    args = p.parse_args(argv)
    if not 1 <= args.shards <= 8 or (args.shards > 1 and not args.cluster):
        p.error("--shards must be 1..8, and more than 1 needs --cluster")
    if not 1 <= args.workers <= 64:
        p.error("--workers must be 1..64")
    if args.workers > 1 and args.url is not None:
        p.error("--workers starts the router: not with --url")
    if (args.url is None) != (args.router_pid is None):
        p.error("--url and --router-pid go together")
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    for ser in args.serializer.split(","):
        if ser not in ("json", "msgpack"):
            p.error(f"unknown serializer {ser!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    opts = Options(seconds=args.seconds, warmup=args.warmup, realm=args.realm, callers=args.callers,
                   window=args.window, payload=args.payload, fanouts=args.fanouts, pub_window=args.pub_window,
                   sub_procs=args.sub_procs, churn_procs=args.churn_procs,
                   churn_concurrency=args.churn_concurrency, memory_sessions=args.memory_sessions,
                   scaling_sessions=args.scaling_sessions, startup_runs=args.startup_runs,
                   router_profile=args.router_profile, workers=args.workers)
    names = [n for n in SCENARIOS if n in args.scenarios.split(",")]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="courtyard-bench-") as tmp:
        redis, shards = None, []
        if args.cluster or args.workers > 1:
            redis = procs.start_redis(Path(tmp)).wait()
            opts.cluster = f"redis://127.0.0.1:{redis.port}/0"
            opts.redis_pid = redis.pid
            for i in range(1, args.shards):
                shard = procs.start_redis(Path(tmp), f"redis-shard-{i}").wait()
                shards.append(shard)
                opts.shards.append(f"redis://127.0.0.1:{shard.port}/0")
                opts.shard_pids.append(shard.pid)
        try:
            rows = run_all(names, args.serializer.split(","), opts, Path(tmp), args.url, args.router_pid)
        finally:
            for server in [redis, *shards]:
                if server is not None:
                    server.stop()
    meta = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": "scripts/bench " + shlex.join(sys.argv[1:] if argv is None else argv),
            "seconds": round(time.monotonic() - started, 1), **report.machine(),
            "options": {k: v for k, v in vars(opts).items()}}
    if args.json_file:
        Path(args.json_file).write_text(report.as_json(rows, meta) + "\n")
    if args.json:
        print(report.as_json(rows, meta))
    else:
        print(report.table(rows))
        print()
        print(report.legend())
        print(f"{meta['date']}, {meta['cpus']} CPUs, Python {meta['python']}, {meta['seconds']} s: {meta['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
