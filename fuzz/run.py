"""The fuzzing run: `connections` workers, each opening connection after connection (WebSocket or
RawSocket, any serializer) and playing one scenario on it, until the frame or time budget is spent."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from fuzz.conn import Conn, Stats
from fuzz.frames import Gen
from fuzz.router import Router
from fuzz.wire import SERIALIZERS, encode, open_tcp, rs_frame, ws_frame, ws_upgrade


@dataclass
class Options:
    frames: int = 100_000
    seconds: float = 600.0
    connections: int = 50
    seed: int = 0
    hang_timeout: float = 10.0
    bomb_depth: int = 16
    big: bool = True


class Budget:
    def __init__(self, stats: Stats, frames: int, seconds: float) -> None:
        self.stats = stats
        self.frames = frames
        self.deadline = time.monotonic() + seconds

    def left(self) -> bool:
        return self.stats.frames < self.frames and time.monotonic() < self.deadline


async def run(router: Router, opts: Options, stats: Stats) -> None:
    budget = Budget(stats, opts.frames, opts.seconds)
    listeners = asyncio.ensure_future(_listeners(router, opts, stats, budget))
    workers = [asyncio.ensure_future(_worker(router, opts, stats, budget, random.Random(opts.seed * 1000 + i)))
               for i in range(opts.connections)]
    await asyncio.gather(*workers)
    await listeners


LISTEN = [[32, 1, {"match": "prefix"}, "com"], [32, 2, {"match": "prefix"}, "fuzz"],
          [64, 3, {"match": "prefix", "invoke": "roundrobin"}, "com.fuzz"]]


async def _listeners(router: Router, opts: Options, stats: Stats, budget: Budget) -> None:
    """A subscriber and callee per (transport, serializer), for the whole run: every fuzzed PUBLISH and
    CALL under com.* and fuzz.* is re-encoded for every serializer (reconnected when the router drops one)."""
    conns: dict[tuple[str, str], Conn] = {}
    try:
        while budget.left() and router.alive():
            for transport in ("ws", "rs"):
                for ser in SERIALIZERS:
                    conn = conns.get((transport, ser))
                    if conn is not None and not conn.closed.is_set():
                        continue
                    if conn is not None:
                        await conn.finish()
                    conn = conns[(transport, ser)] = Conn(stats, transport, ser, random.Random(opts.seed))
                    conn.echo = True
                    if await conn.open(_port(router, conn), opts.hang_timeout):
                        conn.send([1, "realm1", {"roles": {"subscriber": {}, "callee": {}}}], "listener")
                        for msg in LISTEN:
                            conn.send(msg, "listener")
            await asyncio.sleep(0.5)
    finally:
        for conn in conns.values():
            conn.abort()
            await conn.finish()


async def _worker(router: Router, opts: Options, stats: Stats, budget: Budget, r: random.Random) -> None:
    while budget.left() and router.alive():
        transport = r.choice(("ws", "rs"))
        conn = Conn(stats, transport, r.choice(SERIALIZERS), r)
        gen = Gen(r, opts.bomb_depth, opts.big)
        try:
            x = r.random()
            if x < 0.04:
                await _handshake(router, conn, gen, opts)
            elif x < 0.12:
                await _transport_level(router, conn, gen, opts)
            else:
                await _session(router, conn, gen, opts, budget)
        except Exception as e:  # noqa: BLE001 - the fuzzer's own bug: counted and shown, the run goes on
            stats.count(stats.fuzzer_errors, f"{type(e).__name__}: {e}"[:120])
        finally:
            conn.abort() if r.random() < 0.5 else conn.close()
            await conn.finish()


def _port(router: Router, conn: Conn) -> int:
    return router.ws_port if conn.transport == "ws" else router.rs_port


async def _session(router: Router, conn: Conn, gen: Gen, opts: Options, budget: Budget) -> None:
    """HELLO (or junk first), then batches of messages, each batch ended by a probe that must be answered."""
    r = gen.r
    exponent = 15 if r.random() < 0.9 else r.randrange(16)  # a small announced maximum now and then
    if not await conn.open(_port(router, conn), opts.hang_timeout, exponent=exponent):
        return
    hello = gen.hello()
    if r.random() < 0.1:
        msg = gen.mutate(gen.message())
        kind, data = gen.payload(conn.serializer, msg)
        conn.frame(data, "pre-hello-" + kind)
        await conn.probe(opts.hang_timeout, hello)
    elif r.random() < 0.1:
        kind, data = gen.payload(conn.serializer, gen.mutate(hello))
        conn.frame(data, "hello-" + kind)
        await conn.probe(opts.hang_timeout, hello)
    else:
        conn.send(hello, "hello")
        conn.answered.clear()
        await conn.probe(opts.hang_timeout, hello) if r.random() < 0.02 else await _wait(conn, opts.hang_timeout)
    for _ in range(r.randint(1, 4)):
        if conn.closed.is_set() or not budget.left():
            return
        for _ in range(r.randint(1, 30)):
            msg = gen.message()
            if r.random() < 0.15:
                msg = gen.mutate(msg)
            kind, data = gen.payload(conn.serializer, msg)
            conn.frame(data, kind)
            if kind != "message" and r.random() < 0.5:
                break  # damaged bytes usually end the session: probe now
        await conn.drain(opts.hang_timeout)
        await conn.probe(opts.hang_timeout, hello)


async def _wait(conn: Conn, timeout: float) -> None:
    """The answer to a plain HELLO: WELCOME, ABORT or a close. None in time is a hang."""
    try:
        await asyncio.wait_for(conn.answered.wait(), timeout)
    except TimeoutError:
        conn.hung("HELLO")


async def _handshake(router: Router, conn: Conn, gen: Gen, opts: Options) -> None:
    """Odd opening handshakes: unknown subprotocols, wrong paths, long headers; odd RawSocket octets."""
    r = gen.r
    conn.lenient = True
    if conn.transport == "ws":
        port = router.ws_port
        protocols = r.choice([None, "", "wamp.2.json", "wamp.2.cbor.batched", "chat", "wamp.2.msgpack, wamp.2.json",
                              "x" * 3000])
        path = r.choice(["/ws", "/", "/ws/../ws", "/ws?x=1", "/" + "a" * 2000])
        extra = "".join(f"X-Fuzz-{i}: {'v' * r.randrange(200)}\r\n" for i in range(r.randrange(30)))
        upgrade = ws_upgrade("127.0.0.1", port, path, protocols, extra)
        if r.random() < 0.2:
            upgrade = r.randbytes(r.randrange(1, 300)) + b"\r\n\r\n"
        ok = await conn.open(port, opts.hang_timeout, upgrade=upgrade)
        conn.stats.count(conn.stats.kinds, "ws-handshake")
        conn.stats.frames += 1
        if ok:
            conn.established = False
            await conn.probe(opts.hang_timeout, gen.hello())
        return
    # RawSocket: random or nearly right handshake octets, then a HELLO; the router must answer or close
    try:
        conn.reader, conn.writer = await open_tcp(router.rs_port, opts.hang_timeout)
    except (TimeoutError, OSError):
        conn.stats.connect_failures += 1
        return
    conn.stats.connections += 1
    octets = r.choice([r.randbytes(4), bytes((0x7F, r.randrange(256), 0, 0)), bytes((0x7F, 0xF1, r.randrange(256), 0)),
                       bytes((0x7F, 0xF1, 0, r.randrange(256))), bytes((0x7E, 0xF1, 0, 0)), b"\x7f",
                       b"GET / HTTP/1.1\r\n\r\n"])
    conn.raw(octets, "rs-handshake")
    conn._task = asyncio.ensure_future(conn._read())
    conn.send(gen.hello(), "hello")
    await conn.drain(opts.hang_timeout)
    try:
        await asyncio.wait_for(conn.answered.wait(), opts.hang_timeout)
    except TimeoutError:
        conn.stats.hangs.append({"transport": "rs", "serializer": conn.serializer, "probe": "handshake",
                                 "established": False, "last_frames": [("rs-handshake", octets.hex())]})


async def _transport_level(router: Router, conn: Conn, gen: Gen, opts: Options) -> None:
    """Frames that break the transport, not WAMP: odd opcodes, reserved bits, fragmentation, lying or
    truncated lengths, unmasked frames, PINGs and PONGs. Truncations end the connection (no probe:
    the router rightly waits for the rest)."""
    r = gen.r
    if not await conn.open(_port(router, conn), opts.hang_timeout):
        return
    hello = gen.hello()
    if r.random() < 0.7:
        conn.send(hello, "hello")
        await _wait(conn, opts.hang_timeout)
    try:
        payload = encode(conn.serializer, gen.message()) if r.random() < 0.7 else r.randbytes(r.randrange(64))
    except Exception:  # noqa: BLE001 - a value this serializer cannot carry
        payload = r.randbytes(r.randrange(64))
    op = 1 if conn.serializer == "json" else 2
    if conn.transport == "ws":
        x = r.randrange(11)
        if x == 0:
            conn.raw(ws_frame(payload, r.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), "ws-reserved-opcode")
        elif x == 1:
            conn.raw(ws_frame(payload, op, rsv=r.randint(1, 7)), "ws-rsv-bits")
        elif x == 2:
            cut = r.randrange(len(payload) + 1)
            conn.raw(ws_frame(payload[:cut], op, fin=False), "ws-fragment-start")
            conn.raw(ws_frame(payload[cut:], 0), "ws-fragment-end")
        elif x == 3:
            conn.raw(ws_frame(payload, 0), "ws-continuation-alone")
        elif x == 4:
            conn.raw(ws_frame(payload[:5], 9, fin=False), "ws-fragmented-ping")
        elif x == 5:
            conn.raw(ws_frame(r.randbytes(r.choice([0, 10, 125, 126, 200])), r.choice([9, 10])), "ws-ping-pong")
        elif x == 6:
            conn.raw(ws_frame(payload, op, masked=False), "ws-unmasked")
        elif x == 7:
            conn.raw(ws_frame(b"\xff\xfe" + payload, 1), "ws-text-bad-utf8")
        elif x == 8:
            conn.raw(ws_frame(r.randbytes(r.randrange(4)), 8), "ws-close-odd")
        elif x == 9:
            conn.raw(ws_frame(payload, op, declared=r.choice([2**20, 2**31, 2**63 - 1]))[:64], "ws-huge-length")
            return  # the router closes (too big) or waits for the rest: either is right
        else:
            conn.raw(ws_frame(payload, op)[: r.randrange(1, 6)], "ws-truncated")
            return
    else:
        x = r.randrange(6)
        if x == 0:
            conn.raw(rs_frame(payload, kind=r.randint(3, 255)), "rs-reserved-kind")
        elif x == 1:
            conn.raw(rs_frame(payload, declared=r.choice([2**20 + 1, 2**24 - 1])), "rs-huge-length")
        elif x == 2:
            conn.raw(rs_frame(r.randbytes(r.choice([0, 1, 100, 60_000])), kind=1), "rs-ping")
        elif x == 3:
            conn.raw(rs_frame(r.randbytes(r.randrange(100)), kind=2), "rs-pong")
        elif x == 4:
            conn.raw(rs_frame(payload)[: r.randrange(1, 4 + len(payload))], "rs-truncated")
            return
        else:
            conn.raw(rs_frame(payload, declared=0) + payload, "rs-zero-length")
    await conn.drain(opts.hang_timeout)
    await conn.probe(opts.hang_timeout, hello)


async def final_check(router: Router, timeout: float = 10.0) -> dict:
    """A real HELLO → WELCOME on each transport, and a call routed from one to the other."""
    stats = Stats()
    r = random.Random(0)
    callee, caller = Conn(stats, "ws", "json", r), Conn(stats, "rs", "msgpack", r)
    result = {"welcome_ws": False, "welcome_rs": False, "call": False}
    try:
        for conn, key, port in ((callee, "welcome_ws", router.ws_port), (caller, "welcome_rs", router.rs_port)):
            if not await conn.open(port, timeout):
                return result
            conn.send([1, "realm1", {"roles": {"caller": {}, "callee": {}}}])
            await asyncio.wait_for(conn.answered.wait(), timeout)
            result[key] = conn.established
        if not (callee.established and caller.established):
            return result
        callee.answered.clear()
        callee.probe_id = 1
        callee.send([64, 1, {}, "fuzz.final.echo"])
        callee.r = _AlwaysYield()
        await asyncio.sleep(0.2)
        caller.probe_id = 7
        caller.answered.clear()
        caller.send([48, 7, {}, "fuzz.final.echo", ["ping"]])
        await asyncio.wait_for(caller.answered.wait(), timeout)
        result["call"] = caller.probe_ok
    except TimeoutError:
        pass
    finally:
        for conn in (callee, caller):
            conn.abort()
            await conn.finish()
    return result


class _AlwaysYield(random.Random):
    def random(self) -> float:
        return 0.0
