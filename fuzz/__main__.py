"""`python -m fuzz` (scripts/fuzz): start a router, fuzz it over many connections, report, and exit
non-zero on any traceback, hang, router death or RSS over the limit."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from fuzz import report, wire
from fuzz.conn import Stats
from fuzz.router import Router, scan_log
from fuzz.run import Options, final_check, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Options()
    p = argparse.ArgumentParser(prog="scripts/fuzz", description="Socket-level fuzzer for Courtyard: random and "
                                "mutated frames over WebSocket and RawSocket, every serializer, many connections.")
    p.add_argument("--frames", type=int, default=d.frames, help="stop after this many frames sent")
    p.add_argument("--seconds", type=float, default=d.seconds, help="stop after this long, whatever the frames")
    p.add_argument("--connections", type=int, default=d.connections, help="concurrent connections (renewed)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--hang-timeout", type=float, default=d.hang_timeout,
                   help="seconds a probe may wait for its answer before the connection counts as hung")
    p.add_argument("--bomb-depth", type=int, default=d.bomb_depth,
                   help="largest CBOR shared-reference expansion sent, as a power of two (0: none)")
    p.add_argument("--no-big", action="store_true", help="never send messages near or past 1 MiB")
    p.add_argument("--tls", action="store_true", help="both listeners over TLS (a self-signed certificate)")
    p.add_argument("--max-rss-mb", type=float, default=300.0, help="fail when the router's RSS peaks above this")
    p.add_argument("--keep", metavar="DIR", help="keep the router's config and log in DIR")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p.parse_args(argv)


async def _sample_rss(router: Router, rss: dict, stop: asyncio.Event) -> None:
    while not stop.is_set():
        v = router.rss()
        if v is not None:
            rss["peak"] = max(rss["peak"] or 0.0, v)
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass


async def _main(args: argparse.Namespace, router: Router) -> dict:
    opts = Options(frames=args.frames, seconds=args.seconds, connections=args.connections, seed=args.seed,
                   hang_timeout=args.hang_timeout, bomb_depth=args.bomb_depth, big=not args.no_big)
    stats = Stats()
    rss = {"start": router.rss(), "peak": router.rss(), "end": None}
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(_sample_rss(router, rss, stop))
    t0 = time.monotonic()
    await run(router, opts, stats)
    seconds = time.monotonic() - t0
    await asyncio.sleep(1.0)  # let the router finish what it was given
    checked = await final_check(router) if router.alive() else {"welcome_ws": False, "welcome_rs": False,
                                                                "call": False}
    rss["end"] = router.rss()
    stop.set()
    await sampler
    return {
        "frames": stats.frames, "connections": stats.connections, "connect_failures": stats.connect_failures,
        "seconds": round(seconds, 2), "hangs": len(stats.hangs), "hang_samples": stats.hangs[:5],
        "hang_kinds": dict(Counter(f"{h['transport']} {h['probe']}" + (" after WELCOME" if h["established"] else "")
                                   for h in stats.hangs)),
        "hang_timeout": opts.hang_timeout, "probes": stats.probes, "probe_max_s": round(stats.probe_max, 3),
        "probe_slow": stats.probe_slow, "rss_mb": rss, "router_alive": router.alive(), "final_check": checked,
        "max_text": stats.max_text, "max_text_sample": stats.max_text_sample,
        "undecodable": stats.undecodable, "undecodable_samples": stats.undecodable_samples,
        "fuzzer_errors": stats.fuzzer_errors,
        "kinds": stats.kinds, "answers": dict(sorted(stats.answers.items(), key=lambda kv: -kv[1])[:30]),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="courtyard-fuzz-"))
    router = Router(workdir, tls=args.tls)
    if args.tls:
        wire.TLS = wire.client_tls()
    # Ctrl-C (even when started with SIGINT ignored, as background jobs are) and SIGTERM end the run
    # with KeyboardInterrupt, so the finally below always stops our router.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        router.start()
        result = asyncio.run(_main(args, router))
        router_pid = router.pid
        router.stop()
        result["log"] = scan_log(router.log_path)
    except KeyboardInterrupt:
        print(f"interrupted; the router (PID {router.pid if router.proc else '-'}) is stopped", file=sys.stderr)
        return 130
    finally:
        router.stop()
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            for name in ("router.yaml", "router.log"):
                if (workdir / name).exists():
                    shutil.copy(workdir / name, Path(args.keep) / name)
        shutil.rmtree(workdir, ignore_errors=True)
    result["router_pid"] = router_pid
    result["failures"] = report.failures(result, args.max_rss_mb)
    result["meta"] = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                      "command": "scripts/fuzz " + shlex.join(sys.argv[1:] if argv is None else argv),
                      "seed": args.seed, "connections": args.connections, "max_rss_mb": args.max_rss_mb,
                      "tls": args.tls}
    print(report.as_json(result) if args.json else report.table(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
