"""Load generator processes: `python -m bench.load ROLE JSON-ARGS`.

Each runs in its own process so the router's CPU time is measured alone. The parent talks to it
over stdio, one JSON line each way:
  child  → {"ready": ...}          sessions established (and registered / subscribed)
  parent → "go T0 T1"              start the load now; count what completes between the monotonic
                                   times T0 and T1 (CLOCK_MONOTONIC is shared by all processes)
  child  → {"result": ...}         after T1 and a bounded drain, then it exits
Idle holders answer "stop" (or EOF) instead of "go". Every process also has a hard deadline.

The same clients drive the router and the bare ceiling server (bench/ceiling.py): the ceiling
answers every message with one frame, so a "reply" is counted by frames, not by WAMP meaning.
"""

from __future__ import annotations

import json
import random
import resource
import sys
import time
from typing import Any

from twisted.internet import reactor, stdio
from twisted.protocols.basic import LineReceiver

from bench import wsclient as ws

MAX_LATENCY_SAMPLES = 20_000


def raise_nofile() -> int:
    """Raise the soft file-descriptor limit to the hard one: 10,000 sessions need 10,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class WampClient(ws.WsClient):
    """HELLO on open; `established()` after the first reply (WELCOME, or the ceiling's echo)."""

    def __init__(self, host: str, path: str, subprotocol: str, run: Run) -> None:
        super().__init__(host, path, subprotocol)
        self.run = run
        self.codec = run.codec
        self.req = 0
        self.up = False

    def next_req(self) -> int:
        self.req += 1
        return self.req

    def opened(self) -> None:
        self.send(self.codec.frame([ws.HELLO, self.run.realm, {"roles": ws.ROLES, "agent": "courtyard-bench"}]))

    def on_frame(self, payload: bytes) -> None:
        if self.up:
            self.on_message(payload)
            return
        msg = self.codec.decode(payload)
        if msg[0] == ws.ABORT:
            self.run.fail(f"session refused: {msg}")
            return
        self.up = True
        self.established()

    def failed(self, why: str) -> None:
        self.run.fail(f"WebSocket upgrade refused: {why}")

    def connectionLost(self, reason: Any = None) -> None:
        self.run.lost(self)

    def established(self) -> None:
        pass

    def on_message(self, payload: bytes) -> None:
        pass


class Run:
    """One load process: its role's sessions, the measurement window and the stdio channel."""

    def __init__(self, role: str, args: dict) -> None:
        self.role = role
        self.args = args
        self.url = args["url"]
        self.codec = ws.Codec(args["serializer"])
        self.realm = args.get("realm", "realm1")
        self.measuring = False
        self.generating = False
        self.count = 0  # completions (calls, events, acks, cycles) inside the window
        self.total = 0  # completions since go
        self.errors = 0
        self.latencies: list[float] = []
        self.pending_setup = 0
        self.clients: list[WampClient] = []
        self.chan: Channel | None = None
        self.done = False
        self.result_extra: dict = {}

    # -- plumbing --------------------------------------------------------------------------------
    def emit(self, obj: dict) -> None:
        self.chan.sendLine(json.dumps(obj).encode())

    def fail(self, why: str) -> None:
        if not self.done:
            self.done = True
            self.emit({"error": why})
            reactor.callLater(0.1, reactor.stop)

    def lost(self, client: WampClient) -> None:
        if self.generating and self.role != "churn" and not self.done:
            self.fail(f"{self.role}: a connection was lost during the run")

    def connect(self, cls: type[WampClient], on_lost: Any = None) -> None:
        ws.ClientFactory(self.url, self.codec.name, cls, lost=on_lost or self._connect_failed, run=self).connect()

    def _connect_failed(self, _: Any) -> None:
        self.fail(f"cannot connect to {self.url}")

    def setup_done(self) -> None:
        self.pending_setup -= 1
        if self.pending_setup == 0:
            self.emit({"ready": True, "sessions": len(self.clients)})

    def command(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        if parts[0] == "go":
            t0, t1 = float(parts[1]), float(parts[2])
            now = time.monotonic()
            self.generating = True
            self.start_load()
            reactor.callLater(max(0.0, t0 - now), self._mark_start)
            reactor.callLater(max(0.0, t1 - now), self._mark_end)
        elif parts[0] == "stop":
            self.finish()

    def _mark_start(self) -> None:
        self.count = 0
        self.errors = 0
        self.latencies = []
        self.t_start = time.monotonic()
        self.measuring = True

    def _mark_end(self) -> None:
        self.measuring = False
        self.t_end = time.monotonic()
        self.generating = False
        reactor.callLater(float(self.args.get("drain", 0.2)), self.finish)

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        lat = self.latencies
        if len(lat) > MAX_LATENCY_SAMPLES:
            lat = random.sample(lat, MAX_LATENCY_SAMPLES)
        self.emit({"result": {"count": self.count, "total": self.total, "errors": self.errors,
                              "seconds": getattr(self, "t_end", 0) - getattr(self, "t_start", 0),
                              "latencies": lat, "latency_samples_of": len(self.latencies),
                              **self.result_extra}})
        for c in self.clients:
            if c.transport is not None:
                c.transport.abortConnection()
        # The result line (up to ~400 KB of latencies) is larger than a pipe holds: stop only once
        # stdio has written it all (Channel.connectionLost), or after a bound if the parent never reads.
        self.chan.transport.loseConnection()
        reactor.callLater(30, lambda: reactor.stop() if reactor.running else None)

    def start_load(self) -> None:
        pass


class Channel(LineReceiver):
    delimiter = b"\n"

    def __init__(self, run: Run) -> None:
        self.run = run

    def lineReceived(self, line: bytes) -> None:
        self.run.command(line.decode())

    def connectionLost(self, reason: Any = None) -> None:
        # The parent went away (or closed stdin to say stop), or finish() has written its result:
        # never outlive it.
        if not self.run.done:
            self.run.finish()
        if reactor.running:
            reactor.callLater(0, lambda: reactor.stop() if reactor.running else None)


# -- roles -----------------------------------------------------------------------------------------
class CallerRun(Run):
    """One session keeping `window` CALLs in flight; latency from CALL written to RESULT read."""

    def prepare(self) -> None:
        self.pending_setup = 1
        self.connect(Caller)

    def start_load(self) -> None:
        for c in self.clients:
            for _ in range(int(self.args["window"])):
                c.call()


class Caller(WampClient):
    def __init__(self, host: str, path: str, subprotocol: str, run: Run) -> None:
        super().__init__(host, path, subprotocol, run)
        self.sent: dict[int, float] = {}
        self.procedure = run.args.get("procedure", "bench.echo")
        self.payload = ["x" * int(run.args.get("payload", 32))]
        self.encode = run.codec.encode
        self.opcode = run.codec.opcode

    def established(self) -> None:
        self.run.clients.append(self)
        self.run.setup_done()

    def call(self) -> None:
        rid = self.next_req()
        self.sent[rid] = time.monotonic()
        self.send(ws.frame(self.encode([ws.CALL, rid, {}, self.procedure, self.payload]), self.opcode))

    def on_message(self, payload: bytes) -> None:
        msg = self.codec.decode(payload)
        t0 = self.sent.pop(msg[1], None) if msg[0] != ws.ERROR else self.sent.pop(msg[2], None)
        if t0 is None:
            return
        run = self.run
        run.total += 1
        if msg[0] == ws.ERROR:
            run.errors += 1
        elif run.measuring:
            run.count += 1
            run.latencies.append(time.monotonic() - t0)
        if run.generating:
            self.call()


class CalleeRun(Run):
    """One session registering the procedure and answering every INVOCATION with a YIELD."""

    def prepare(self) -> None:
        self.pending_setup = 1
        self.connect(Callee)


class Callee(WampClient):
    def established(self) -> None:
        self.run.clients.append(self)
        self.send(self.codec.frame([ws.REGISTER, self.next_req(), {}, self.run.args.get("procedure", "bench.echo")]))

    def on_message(self, payload: bytes) -> None:
        msg = self.codec.decode(payload)
        code = msg[0]
        if code == ws.INVOCATION:
            self.send(self.codec.frame([ws.YIELD, msg[1], {}, msg[4] if len(msg) > 4 else []]))
            run = self.run
            run.total += 1
            if run.measuring:
                run.count += 1
        elif code == ws.REGISTERED:
            self.run.setup_done()
        elif code == ws.ERROR:
            self.run.fail(f"REGISTER failed: {msg}")


class PublisherRun(Run):
    """One session keeping `window` acknowledged PUBLISHes in flight."""

    def prepare(self) -> None:
        self.pending_setup = 1
        self.connect(Publisher)

    def start_load(self) -> None:
        for c in self.clients:
            for _ in range(int(self.args["window"])):
                c.publish()


class Publisher(WampClient):
    def __init__(self, host: str, path: str, subprotocol: str, run: Run) -> None:
        super().__init__(host, path, subprotocol, run)
        self.topic = run.args.get("topic", "bench.topic")
        self.payload = ["x" * int(run.args.get("payload", 32))]
        self.options = {"acknowledge": True}
        self.encode = run.codec.encode
        self.opcode = run.codec.opcode

    def established(self) -> None:
        self.run.clients.append(self)
        self.run.setup_done()

    def publish(self) -> None:
        self.send(ws.frame(self.encode([ws.PUBLISH, self.next_req(), self.options, self.topic, self.payload]),
                           self.opcode))

    def on_message(self, payload: bytes) -> None:
        run = self.run
        run.total += 1
        if self.codec.decode(payload)[0] == ws.ERROR:
            run.errors += 1
        elif run.measuring:
            run.count += 1
        if run.generating:
            self.publish()


class SubscriberRun(Run):
    """`sessions` sessions subscribed to one topic; EVENTs are counted, never decoded."""

    def prepare(self) -> None:
        n = int(self.args["sessions"])
        self.pending_setup = n
        for _ in range(n):
            self.connect(Subscriber)


class Subscriber(WampClient):
    def established(self) -> None:
        self.run.clients.append(self)
        self.send(self.codec.frame([ws.SUBSCRIBE, self.next_req(), {}, self.run.args.get("topic", "bench.topic")]))

    def on_message(self, payload: bytes) -> None:
        msg = self.codec.decode(payload)
        if msg[0] == ws.ERROR:
            self.run.fail(f"SUBSCRIBE failed: {msg}")
            return
        self.count_only = True  # SUBSCRIBED (or the ceiling's echo): from now on only EVENTs come
        self.run.setup_done()

    def on_count(self) -> None:
        run = self.run
        run.total += 1
        if run.measuring:
            run.count += 1


class ChurnRun(Run):
    """`concurrency` connections at a time, each: upgrade, HELLO → WELCOME, GOODBYE → GOODBYE,
    WebSocket close; a cycle counts when the server has closed the TCP connection."""

    def prepare(self) -> None:
        self.pending_setup = 1
        self.max_cycles = int(self.args.get("max_cycles", 100_000))
        self.started = 0
        self.setup_done()

    def start_load(self) -> None:
        for _ in range(int(self.args["concurrency"])):
            self.cycle()

    def cycle(self) -> None:
        if self.generating and self.started < self.max_cycles:
            self.started += 1
            self.connect(Churner, on_lost=self._cycle_failed)

    def _cycle_failed(self, _: Any) -> None:
        self.errors += 1
        self.cycle()

    def lost(self, client: WampClient) -> None:
        if client.state == 2:
            self.total += 1
            if self.measuring:
                self.count += 1
        else:
            self.errors += 1
        self.cycle()


class Churner(WampClient):
    state = 0  # 0: joining, 1: leaving, 2: GOODBYE answered

    def established(self) -> None:
        self.state = 1
        self.send(self.codec.frame([ws.GOODBYE, {}, "wamp.close.normal"]))

    def on_message(self, payload: bytes) -> None:
        if self.state == 1:
            self.state = 2
            self.close()


class IdleRun(Run):
    """`sessions` idle sessions, each optionally holding one registration and one subscription on
    URIs of its own; opened `concurrency` at a time, then held until "stop"."""

    def prepare(self) -> None:
        self.n = int(self.args["sessions"])
        self.opened_n = 0
        self.pending_setup = self.n
        if self.n == 0:
            self.pending_setup = 1
            self.setup_done()
            return
        for _ in range(min(self.n, int(self.args.get("concurrency", 50)))):
            self.open_next()

    def open_next(self) -> None:
        if self.opened_n < self.n:
            self.opened_n += 1
            self.connect(Idle)

    def lost(self, client: WampClient) -> None:
        if not self.done:
            self.fail("an idle session was disconnected")


class Idle(WampClient):
    def established(self) -> None:
        run = self.run
        run.clients.append(self)
        self.index = int(run.args.get("offset", 0)) + len(run.clients)
        self.waiting = 0
        if run.args.get("register"):
            self.waiting += 1
            self.send(self.codec.frame([ws.REGISTER, self.next_req(), {}, f"bench.idle.proc.{self.index}"]))
        if run.args.get("subscribe"):
            self.waiting += 1
            self.send(self.codec.frame([ws.SUBSCRIBE, self.next_req(), {}, f"bench.idle.topic.{self.index}"]))
        if not self.waiting:
            self.ready()

    def on_message(self, payload: bytes) -> None:
        if self.codec.decode(payload)[0] == ws.ERROR:
            self.run.fail("REGISTER/SUBSCRIBE of an idle session failed")
            return
        self.waiting -= 1
        if self.waiting == 0:
            self.ready()

    def ready(self) -> None:
        self.run.setup_done()
        self.run.open_next()


ROLES: dict[str, type[Run]] = {"caller": CallerRun, "callee": CalleeRun, "publisher": PublisherRun,
                               "subscriber": SubscriberRun, "churn": ChurnRun, "idle": IdleRun}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    role, args = argv[0], json.loads(argv[1])
    raise_nofile()
    run = ROLES[role](role, args)
    run.chan = Channel(run)
    stdio.StandardIO(run.chan)
    reactor.callWhenRunning(run.prepare)
    # Bounded in time whatever happens: the parent may have died without closing our stdin.
    reactor.callLater(float(args.get("max_life", 600)),
                      lambda: run.fail("hard deadline reached") if not run.done else None)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
