"""One fuzzing connection over WebSocket or RawSocket: sends frames, reads what the router answers,
plays a minimal peer (answers PINGs, GOODBYEs and, at random, INVOCATIONs) and tells probes apart."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Any

from fuzz.wire import RsParser, WsParser, decode, encode, open_tcp, rs_frame, rs_handshake, ws_frame, ws_upgrade

PROBE_BASE = 10_000_000  # probe request ids live above anything the generators use


class Stats:
    """Counters shared by all connections of a run."""

    def __init__(self) -> None:
        self.frames = 0
        self.connections = 0
        self.connect_failures = 0
        self.kinds: dict[str, int] = {}
        self.answers: dict[str, int] = {}
        self.hangs: list[dict] = []
        self.probes = 0
        self.probe_max = 0.0
        self.probe_slow = 0  # answered, but after more than a second
        self.max_text = 0  # longest ABORT/ERROR text the router sent back
        self.max_text_sample = ""
        self.undecodable = 0
        self.undecodable_samples: list[str] = []
        self.fuzzer_errors: dict[str, int] = {}

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


class Conn:
    def __init__(self, stats: Stats, transport: str, serializer: str, rng: random.Random) -> None:
        self.stats = stats
        self.transport = transport
        self.serializer = serializer
        self.r = rng
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.closed = asyncio.Event()
        self.answered = asyncio.Event()
        self.probe_id: int | None = None
        self.established = False
        self.probe_ok = False  # the last probe got PUBLISHED or RESULT (not ERROR)
        self.echo = False  # a listener: YIELDs back every INVOCATION's arguments
        self.lenient = False  # the serializer may not be the one negotiated (handshake fuzzing): no decode counts
        self.exponent = 15  # RawSocket: the maximum message size this peer announces is 2^(9 + exponent)
        self.recent: deque[tuple[str, bytes]] = deque(maxlen=6)  # the last frames sent, for a hang report
        self._task: asyncio.Task | None = None
        self.parser: Any = WsParser() if transport == "ws" else RsParser()

    # -- opening ----------------------------------------------------------------------------------
    async def open(self, port: int, timeout: float, exponent: int = 15, upgrade: bytes | None = None) -> bool:
        """TCP connect and the transport's handshake; False (counted) when the router refuses."""
        try:
            self.reader, self.writer = await open_tcp(port, timeout)
        except (TimeoutError, OSError):
            self.stats.connect_failures += 1
            return False
        self.stats.connections += 1
        self.exponent = exponent
        if self.transport == "ws":
            self.writer.write(upgrade or ws_upgrade("127.0.0.1", port, "/ws", f"wamp.2.{self.serializer}"))
            try:
                head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                self.abort()
                return False
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.stats.count(self.stats.answers, "http-" + head[9:12].decode("latin-1", "replace"))
                self.abort()
                return False
        else:
            self.writer.write(rs_handshake(self.serializer, exponent))
        self._task = asyncio.ensure_future(self._read())
        return True

    # -- sending ----------------------------------------------------------------------------------
    def raw(self, data: bytes, kind: str) -> None:
        """Bytes as they are (counted as one frame)."""
        if self.writer is None or self.closed.is_set() or self.writer.transport.is_closing():
            return
        self.stats.frames += 1
        self.stats.count(self.stats.kinds, kind)
        self.recent.append((kind, data[:200]))
        try:
            self.writer.write(data)
        except (OSError, RuntimeError):
            self.closed.set()

    def frame(self, payload: bytes, kind: str) -> None:
        """One WAMP message in the transport's framing."""
        if self.transport == "ws":
            self.raw(ws_frame(payload, 1 if self.serializer == "json" else 2), kind)
        else:
            self.raw(rs_frame(payload), kind)

    def send(self, msg: list, kind: str = "message") -> None:
        try:
            self.frame(encode(self.serializer, msg), kind)
        except Exception:  # noqa: BLE001 - a reply this serializer cannot carry: skip it
            pass

    async def drain(self, timeout: float) -> None:
        if self.writer is None or self.closed.is_set():
            return
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (TimeoutError, OSError, RuntimeError):
            pass

    async def probe(self, timeout: float, hello: list) -> None:
        """Send a frame the router must answer (a HELLO, an acknowledged PUBLISH or a meta CALL) and wait
        for the answer or the close. No answer in `timeout` is a hang."""
        if self.closed.is_set() or self.writer is None:
            return
        self.stats.probes += 1
        self.probe_id = PROBE_BASE + self.stats.probes
        self.answered.clear()
        if not self.established:
            what, msg = "HELLO", hello
        elif self.r.random() < 0.8:
            what, msg = "PUBLISH", [16, self.probe_id, {"acknowledge": True}, "fuzz.probe", [self.stats.probes]]
        else:
            what, msg = "CALL", [48, self.probe_id, {}, "wamp.session.count", []]
        t0 = time.monotonic()
        self.send(msg, "probe")
        await self.drain(timeout)
        waits = [asyncio.ensure_future(self.answered.wait()), asyncio.ensure_future(self.closed.wait())]
        done, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        elapsed = time.monotonic() - t0
        if not done:
            self.hung(what)
            return
        self.stats.probe_max = max(self.stats.probe_max, elapsed)
        if elapsed > 1.0:
            self.stats.probe_slow += 1

    def hung(self, what: str) -> None:
        """No answer to a frame that must get one: counted with the last frames sent, and the connection ends."""
        self.stats.hangs.append({"transport": self.transport, "serializer": self.serializer, "probe": what,
                                 "established": self.established,
                                 "max_message": 2 ** (9 + self.exponent) if self.transport == "rs" else None,
                                 "last_frames": [(k, d.hex()) for k, d in self.recent]})
        self.abort()

    def close(self) -> None:
        """End politely, or not, at random."""
        if self.writer is None or self.closed.is_set():
            return
        if self.r.random() < 0.5:
            self.abort()
            return
        if self.established and self.r.random() < 0.5:
            self.send([6, {}, "wamp.close.normal"], "goodbye")
        if self.transport == "ws" and self.r.random() < 0.5:
            self.raw(ws_frame(b"\x03\xe8", 8), "ws-close")
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            pass
        self.closed.set()

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.transport.abort()
            except (OSError, RuntimeError):
                pass
        self.closed.set()

    async def finish(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    # -- receiving --------------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for kind, payload in self.parser.feed(data):
                    self._on_frame(kind, payload)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            self.answered.set()

    def _on_frame(self, kind: int, payload: bytes) -> None:
        if self.transport == "ws":
            if kind == 8:  # close: answer it, the router closes TCP
                self.answered.set()
                return
            if kind == 9:
                self.raw(ws_frame(payload[:125], 10), "ws-pong")
                return
            if kind not in (1, 2):
                return
        elif kind == 1:  # RawSocket PING from the router
            self.raw(rs_frame(payload, 2), "rs-pong")
            return
        elif kind != 0:
            return
        msg = decode(self.serializer, payload)
        if type(msg) is not list or not msg:
            self.answered.set()
            if self.lenient:
                return
            self.stats.undecodable += 1
            if len(self.stats.undecodable_samples) < 5:
                self.stats.undecodable_samples.append(f"{self.transport}/{self.serializer}: {payload[:300].hex()}")
            return
        self._on_message(msg)

    def _on_message(self, msg: list) -> None:
        code = msg[0]
        stats = self.stats
        if code == 2:
            self.established = True
            self.answered.set()
        elif code == 3:
            self.established = False
            stats.count(stats.answers, f"ABORT {msg[2] if len(msg) > 2 else '?'}"[:80])
            self._text(msg[1] if len(msg) > 1 else None)
            self.answered.set()
        elif code == 6:
            if self.established:
                self.send([6, {}, "wamp.close.goodbye_and_out"], "goodbye")
            self.established = False
            self.answered.set()
        elif code == 8:
            stats.count(stats.answers, f"ERROR {msg[4] if len(msg) > 4 else '?'}"[:80])
            if len(msg) > 5 and type(msg[5]) is list and msg[5] and type(msg[5][0]) is str:
                self._text({"message": msg[5][0]})
            if len(msg) > 2 and msg[2] == self.probe_id:
                self.answered.set()
        elif code in (17, 50):
            if len(msg) > 1 and msg[1] == self.probe_id:
                self.probe_ok = True
                self.answered.set()
        elif code == 68 and len(msg) > 1:
            self._invoked(msg)

    def _invoked(self, msg: list) -> None:
        """Answer an INVOCATION at random: YIELD, ERROR, a mangled YIELD, or never."""
        if self.echo:
            self.send([70, msg[1], {}, *msg[4:6]], "yield")
            return
        x = self.r.random()
        if x < 0.4:
            self.send([70, msg[1], {}, msg[4] if len(msg) > 4 and type(msg[4]) is list else []], "yield")
        elif x < 0.5:
            self.send([8, 68, msg[1], {}, "com.fuzz.error", ["no"]], "yield-error")
        elif x < 0.6:
            self.send([70, msg[1], {"progress": self.r.random() < 0.5}, [self.r.randbytes(8)], {"k": None}], "yield")

    def _text(self, details: Any) -> None:
        if type(details) is dict and type(details.get("message")) is str:
            text = details["message"]
            if len(text) > self.stats.max_text:
                self.stats.max_text = len(text)
                self.stats.max_text_sample = text[:160]
