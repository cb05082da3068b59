"""Time from kill -9 of a cluster node to the last `wamp.session.on_leave` for its sessions, seen by a
subscriber on a surviving node (issue 12, point 4: bound node_timeout + heartbeat).

    .venv/bin/python -m bench.cluster_purge [--sessions 1000]

Starts its own redis-server and two nodes (a, b; default heartbeat 1 s, node_timeout 3 s), opens
`sessions` idle sessions on b, subscribes on a, kills b with SIGKILL and times the events.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

from twisted.internet import reactor

from bench import procs
from bench import wsclient as ws
from bench.scenarios import Options, Target, hold_idle


class Watcher(ws.WsClient):
    """Subscribes to wamp.session.on_leave on node a; counts the events and when they came."""

    def __init__(self, host: str, path: str, subprotocol: str, state: dict) -> None:
        super().__init__(host, path, subprotocol)
        self.state = state
        self.codec = ws.Codec("json")

    def opened(self) -> None:
        self.send(self.codec.frame([ws.HELLO, "realm1", {"roles": ws.ROLES}]))

    def on_frame(self, payload: bytes) -> None:
        msg = self.codec.decode(payload)
        if msg[0] == ws.WELCOME:
            self.send(self.codec.frame([ws.SUBSCRIBE, 1, {}, "wamp.session.on_leave"]))
        elif msg[0] == ws.SUBSCRIBED:
            self.state["subscribed"]()
        elif msg[0] == ws.EVENT:
            self.state["times"].append(time.monotonic())
            if len(self.state["times"]) >= self.state["expected"]:
                reactor.callLater(0, reactor.stop)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="courtyard-purge-") as tmp:
        workdir = Path(tmp)
        redis = procs.start_redis(workdir).wait()
        url = f"redis://127.0.0.1:{redis.port}/0"
        a = procs.start_router(workdir, name="purge-a", cluster=url).wait()
        b = procs.start_router(workdir, name="purge-b", cluster=url).wait()
        try:
            with procs.Group(workdir) as g:
                hold_idle(g, Target(f"ws://127.0.0.1:{b.port}", b.pid, False), "msgpack", Options(), args.sessions)
                deadline = time.monotonic() + 30
                while procs.redis_command(url, "SCARD", "cy:n:purge-b:s") < args.sessions:
                    if time.monotonic() > deadline:
                        raise RuntimeError("b's sessions did not reach Redis")
                    time.sleep(0.05)
                state: dict = {"times": [], "expected": args.sessions}

                def kill_b() -> None:
                    state["t0"] = time.monotonic()
                    os.kill(b.pid, signal.SIGKILL)

                state["subscribed"] = lambda: reactor.callLater(0.2, kill_b)
                ws.ClientFactory(f"ws://127.0.0.1:{a.port}/ws", "json", Watcher, state=state).connect()
                reactor.callLater(60, reactor.stop)
                reactor.run()
            times = state["times"]
            left = procs.redis_command(url, "SCARD", "cy:sessions")
            print(f"sessions on the killed node: {args.sessions}; on_leave events seen on the survivor: {len(times)}")
            if times:
                print(f"kill -9 -> first on_leave {times[0] - state['t0']:.2f} s, last {times[-1] - state['t0']:.2f} s "
                      f"(bound: node_timeout 3 s + heartbeat 1 s = 4 s)")
            print(f"sessions left in Redis: {left} (the subscriber's own on a)")
        finally:
            for server in (a, b, redis):
                server.stop()


if __name__ == "__main__":
    main()
