"""Which Redis client for the cluster: txredisapi on Twisted's default reactor, or redis-py's asyncio
client on Twisted's asyncio reactor. Measured, not guessed (issue 12): round-trip latency and client
CPU per command, pipelined throughput, pub/sub delivery, and what a Redis restart does to each.

    .venv/bin/python -m bench.redis_clients [--commands 5000] [--pipeline 20000]

Starts its own redis-server (loopback, free port, no persistence) and runs each client in a fresh
process, because the reactor is chosen once per process. Needs both clients installed
(`pip install txredisapi redis`); the router itself needs only the one chosen ([redis] extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(port: int, workdir: str) -> subprocess.Popen:
    proc = subprocess.Popen([shutil.which("redis-server"), "--save", "", "--appendonly", "no", "--port", str(port),
                             "--bind", "127.0.0.1", "--dir", workdir], stdout=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("redis-server did not start")


def _figures(t0: float, c0: float, n: int) -> dict:
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"us_per_cmd": round(wall / n * 1e6, 1), "cpu_us_per_cmd": round(cpu / n * 1e6, 1)}


# -- txredisapi on the default reactor -------------------------------------------------------------
def run_txredisapi(port: int, n: int, pn: int) -> dict:
    import txredisapi
    from twisted.internet import defer, reactor, task

    out: dict = {}

    @defer.inlineCallbacks
    def main():
        conn = yield txredisapi.Connection("127.0.0.1", port, dbid=0, reconnect=True)
        for i in range(200):  # warm up
            yield conn.set(f"w{i}", "x")
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            yield conn.set(f"k{i}", "v" * 64)
        out["sequential_set"] = _figures(t0, c0, n)
        t0, c0 = time.perf_counter(), time.process_time()
        pipe = yield conn.pipeline()
        for i in range(pn):
            pipe.hset(f"h{i % 1000}", f"f{i}", "v" * 64)
        yield pipe.execute_pipeline()
        out["pipelined_hset"] = _figures(t0, c0, pn)
        # pub/sub: a subscriber connection, n messages published, time until the last arrives
        got: list = []
        done = defer.Deferred()

        class Sub(txredisapi.SubscriberProtocol):
            def messageReceived(self, pattern, channel, message):
                got.append(message)
                if len(got) == n:
                    done.callback(None)

        from twisted.internet.protocol import ClientCreator
        sub = yield ClientCreator(reactor, Sub).connectTCP("127.0.0.1", port)
        yield sub.subscribe("bench")
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            conn.publish("bench", "m" * 64)
        yield done
        out["pubsub_publish_and_receive"] = _figures(t0, c0, n)
        out["reconnect"] = yield _restart_probe(lambda: conn.set("r", "1"), port,
                                                lambda s: task.deferLater(reactor, s, lambda: None))
        yield conn.disconnect()
        sub.transport.loseConnection()

    def stop(result):
        if isinstance(result, Exception) or hasattr(result, "getTraceback"):
            out["error"] = str(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: main().addBoth(stop))
    reactor.run()
    return out


# -- redis-py asyncio on Twisted's asyncio reactor -------------------------------------------------
def run_redis_asyncio(port: int, n: int, pn: int) -> dict:
    import asyncio

    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    import redis.asyncio as aioredis
    from twisted.internet import defer, reactor

    out: dict = {}

    async def main():
        r = aioredis.Redis(host="127.0.0.1", port=port, db=0)
        for i in range(200):
            await r.set(f"w{i}", "x")
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            await r.set(f"k{i}", "v" * 64)
        out["sequential_set"] = _figures(t0, c0, n)
        t0, c0 = time.perf_counter(), time.process_time()
        pipe = r.pipeline(transaction=False)
        for i in range(pn):
            pipe.hset(f"h{i % 1000}", f"f{i}", "v" * 64)
        await pipe.execute()
        out["pipelined_hset"] = _figures(t0, c0, pn)
        ps = r.pubsub()
        await ps.subscribe("bench")
        await ps.get_message(timeout=1.0)  # the subscribe confirmation
        t0, c0 = time.perf_counter(), time.process_time()

        async def receive():
            got = 0
            while got < n:
                m = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if m is not None:
                    got += 1

        rx = asyncio.ensure_future(receive())
        for _ in range(n):
            await r.publish("bench", "m" * 64)
        await rx
        out["pubsub_publish_and_receive"] = _figures(t0, c0, n)
        await ps.aclose()
        out["reconnect"] = await _restart_probe_async(lambda: r.set("r", "1"), port)
        await r.aclose()

    def stop(result):
        if hasattr(result, "getTraceback"):
            out["error"] = result.getErrorMessage()
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.Deferred.fromFuture(asyncio.ensure_future(main())).addBoth(stop))
    reactor.run()
    return out


def _restart_probe(command, port: int, sleep):
    """Kill redis-server, start it again on the same port, then issue commands every 50 ms: how many
    fail and how long until one succeeds (the client's own reconnect, no help from us)."""
    from twisted.internet import defer

    @defer.inlineCallbacks
    def probe():
        _RESTART(port)
        t0, failures = time.perf_counter(), 0
        for _ in range(200):
            try:
                yield command()
                return {"failed_commands": failures, "ms_to_first_success": round((time.perf_counter() - t0) * 1e3)}
            except Exception:
                failures += 1
                yield sleep(0.05)
        return {"failed_commands": failures, "ms_to_first_success": None}

    return probe()


async def _restart_probe_async(command, port: int) -> dict:
    import asyncio

    _RESTART(port)
    t0, failures = time.perf_counter(), 0
    for _ in range(200):
        try:
            await command()
            return {"failed_commands": failures, "ms_to_first_success": round((time.perf_counter() - t0) * 1e3)}
        except Exception:
            failures += 1
            await asyncio.sleep(0.05)
    return {"failed_commands": failures, "ms_to_first_success": None}


def _RESTART(port: int) -> None:  # noqa: N802 - replaced in the child by one that knows the PID
    raise RuntimeError("no redis-server to restart")


def child(args: argparse.Namespace) -> None:
    """One client's run in this process; redis-server restarts are done here by PID."""
    global _RESTART
    state = {"pid": args.redis_pid}

    def restart(port: int) -> None:
        import os
        import signal

        os.kill(state["pid"], signal.SIGKILL)
        time.sleep(0.2)
        state["proc"] = _redis(port, args.workdir)
        state["pid"] = state["proc"].pid

    _RESTART = restart
    fn = run_txredisapi if args.client == "txredisapi" else run_redis_asyncio
    try:
        print(json.dumps(fn(args.port, args.commands, args.pipeline)))
    finally:
        if "proc" in state:  # the redis-server this process restarted is its own to stop
            _kill(state["proc"].pid)
            state["proc"].wait(5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", type=int, default=5000)
    p.add_argument("--pipeline", type=int, default=20000)
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--redis-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        return child(args)
    with tempfile.TemporaryDirectory() as workdir:
        for client in ("txredisapi", "redis-asyncio"):
            port = _free_port()
            server = _redis(port, workdir)
            try:
                res = subprocess.run([sys.executable, "-m", "bench.redis_clients", "--client", client,
                                      "--port", str(port), "--redis-pid", str(server.pid), "--workdir", workdir,
                                      "--commands", str(args.commands), "--pipeline", str(args.pipeline)],
                                     capture_output=True, text=True, timeout=300)
                line = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "{}"
                figures = json.loads(line)
                print(client, json.dumps(figures) if figures else res.stderr[-2000:])
            finally:
                _kill(server.pid)
                server.wait(5)


def _kill(pid: int) -> None:
    import os
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()
