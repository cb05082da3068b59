"""Raw WAMP peers for property tests: any serializer (json, msgpack, cbor) over WebSocket or RawSocket.

Why not Autobahn's client or tests/wampclient.RawPeer: those either refuse to send odd values or
decode leniently. These peers encode with independent libraries (never router/serializers.py) and
decode strictly — JSON without NaN/Infinity, UTF-8 without lone surrogates — so that a router that
forwards something a peer cannot read is caught, not papered over.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import struct
import sys
from typing import Any

import cbor2
import msgpack
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, protocol, reactor

TIMEOUT = 5.0
ROLES = {"caller": {}, "callee": {}, "publisher": {}, "subscriber": {}}


class Undecodable:
    """What a peer got that it could not decode (kept as bytes for the failure report)."""

    def __init__(self, payload: bytes, why: str) -> None:
        self.payload = payload
        self.why = why

    def __repr__(self) -> str:
        return f"Undecodable({self.why}: {self.payload[:120]!r})"


# -- serializers (client side) --------------------------------------------------------------------
def _to_json(value: Any) -> Any:
    t = type(value)
    if t is bytes:
        return "\x00" + base64.b64encode(value).decode("ascii")
    if t in (list, tuple):
        return [_to_json(v) for v in value]
    if t is dict:
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _from_json(value: Any) -> Any:
    t = type(value)
    if t is str and value[:1] == "\x00":
        try:
            return base64.b64decode(value[1:], validate=True)
        except ValueError:
            return value  # not the binary convention after all: the caller compares leniently there
    if t is list:
        return [_from_json(v) for v in value]
    if t is dict:
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def encode(serializer: str, msg: Any) -> bytes:
    """Encode like a lenient client would: JSON may carry NaN and escaped lone surrogates."""
    if serializer == "json":
        return json.dumps(_to_json(msg), separators=(",", ":")).encode("ascii")
    if serializer == "msgpack":
        return msgpack.packb(msg, use_bin_type=True)
    return cbor2.dumps(msg)


def decode(serializer: str, payload: bytes) -> Any:
    """Decode strictly; raises on anything a conforming peer could not read."""
    if serializer == "json":
        return _from_json(json.loads(payload.decode("utf-8"), parse_constant=_no_constant))
    if serializer == "msgpack":
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return cbor2.loads(payload)


def same(a: Any, b: Any) -> bool:
    """Equality that tells bool from int from float, NaN equal to NaN, lists equal to tuples."""
    ta, tb = type(a), type(b)
    if ta in (list, tuple) and tb in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if ta is not tb:
        return False
    if ta is float:
        return (math.isnan(a) and math.isnan(b)) or a == b
    if ta is dict:
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    return a == b


@contextlib.contextmanager
def deep_ok(limit: int = 12_000):
    """Let this process's own decoding and comparing go deeper than Python's default limit (the router
    shares the process, but runs no code while a test decodes, so its own limits stay what they are)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# -- the peer -------------------------------------------------------------------------------------
class Peer:
    """One connection. `inbox` gets decoded messages (or Undecodable); `closed` fires on disconnect."""

    def __init__(self, serializer: str, transport: str) -> None:
        self.serializer = serializer
        self.transport = transport
        self.opened: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.inbox: defer.DeferredQueue = defer.DeferredQueue()
        self.on_message = None  # optional hook: called with each decoded message instead of queueing it
        self.session: int | None = None
        self._write = None
        self._drop = None
        self._next_id = 0

    def __repr__(self) -> str:
        return f"<{self.transport}/{self.serializer} peer>"

    @property
    def is_closed(self) -> bool:
        return self.closed.called

    def request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _received(self, payload: bytes) -> None:
        try:
            with deep_ok():
                msg = decode(self.serializer, payload)
        except Exception as e:  # noqa: BLE001 - anything undecodable is a finding, kept for the report
            msg = Undecodable(payload, f"{type(e).__name__}: {e}")
        if self.on_message is not None and type(msg) is list:
            self.on_message(self, msg)
        else:
            self.inbox.put(msg)

    def _lost(self) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"{self!r} refused"))
        if not self.closed.called:
            self.closed.callback(None)

    def send(self, msg: Any) -> None:
        self.send_bytes(encode(self.serializer, msg))

    def send_bytes(self, payload: bytes) -> None:
        self._write(payload)

    async def recv(self, seconds: float = TIMEOUT) -> Any:
        d = self.inbox.get()
        d.addTimeout(seconds, reactor)
        return await d

    async def hello(self, realm: str = "realm1") -> list:
        self.send([1, realm, {"roles": ROLES}])
        msg = await self.recv()
        assert type(msg) is list and msg[0] == 2, f"{self!r}: no WELCOME: {msg!r}"
        self.session = msg[1]
        return msg

    def drop(self) -> None:
        if not self.is_closed:
            self._drop()


class _WsProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        peer = self.factory.peer
        peer._write = lambda payload: self.sendMessage(payload, peer.serializer != "json")
        peer._drop = lambda: self.dropConnection(abort=True)
        peer.opened.callback(peer)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.peer._received(payload)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.peer._lost()


class _RsProtocol(protocol.Protocol):
    """RawSocket client: handshake, then 4-byte headers; answers PINGs, ignores PONGs."""

    def connectionMade(self) -> None:
        peer = self.factory.peer
        ser_id = {"json": 1, "msgpack": 2, "cbor": 3}[peer.serializer]
        self.transport.write(bytes((0x7F, (self.factory.exponent << 4) | ser_id, 0, 0)))
        self._buf = b""
        self._shaken = False

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        peer = self.factory.peer
        if not self._shaken:
            if len(self._buf) < 4:
                return
            reply, self._buf = self._buf[:4], self._buf[4:]
            if reply[0] != 0x7F or reply[1] & 0x0F == 0:  # an error code instead of our serializer
                self.transport.abortConnection()
                return
            self._shaken = True
            peer._write = lambda payload: self.transport.write(struct.pack(">I", len(payload)) + payload)
            peer._drop = self.transport.abortConnection
            peer.opened.callback(peer)
        while len(self._buf) >= 4:
            kind, length = self._buf[0] & 0x07, int.from_bytes(self._buf[1:4], "big")
            if len(self._buf) < 4 + length:
                return
            payload, self._buf = self._buf[4:4 + length], self._buf[4 + length:]
            if kind == 0:
                peer._received(payload)
            elif kind == 1:
                self.transport.write(bytes((2,)) + length.to_bytes(3, "big") + payload)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.peer._lost()


async def open_peer(host: str, port: int, serializer: str, transport: str = "ws", exponent: int = 15,
                    path: str = "/ws") -> Peer:
    """Connect (no HELLO yet). `exponent`: the RawSocket maximum this peer announces, 2^(9+exponent)."""
    peer = Peer(serializer, transport)
    if transport == "ws":
        factory = WebSocketClientFactory(f"ws://{host}:{port}{path}", protocols=[f"wamp.2.{serializer}"])
        factory.protocol = _WsProtocol
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
    else:
        factory = protocol.ClientFactory()
        factory.protocol = _RsProtocol
        factory.exponent = exponent
    factory.peer = peer
    reactor.connectTCP(host, port, factory)
    d = peer.opened
    d.addTimeout(TIMEOUT, reactor)
    await d
    return peer
