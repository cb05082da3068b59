"""Test clients over real sockets: autobahn-python sessions, and raw WebSocket and RawSocket peers that
send arbitrary frames (for the bad-input paths a well-behaved client never takes)."""

from __future__ import annotations

import json

import cbor2
import msgpack
from autobahn.twisted.rawsocket import WampRawSocketClientFactory
from autobahn.twisted.util import sleep
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import (
    WampWebSocketClientFactory,
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from autobahn.wamp.auth import compute_wcs, derive_key
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig
from twisted.internet import defer, endpoints, protocol, reactor

TIMEOUT = 5.0


class Aborted(Exception):
    """The router refused the session (ABORT); .details is autobahn's CloseDetails."""

    def __init__(self, details) -> None:
        super().__init__(f"{details.reason}: {details.message}")
        self.details = details
        self.reason = details.reason


class Client(ApplicationSession):
    """An autobahn session whose join and leave are Deferreds a test can wait for."""

    def __init__(self, config, authmethods=None, authid=None, authextra=None, on_challenge=None) -> None:
        super().__init__(config)
        self._authextra = authextra
        self._on_challenge = on_challenge
        self.joined: defer.Deferred = defer.Deferred()
        self.left: defer.Deferred = defer.Deferred()
        self.disconnected: defer.Deferred = defer.Deferred()
        self._authmethods = authmethods
        self._authid = authid

    def onConnect(self) -> None:
        self.join(self.config.realm, authmethods=self._authmethods, authid=self._authid, authextra=self._authextra)

    def onChallenge(self, challenge):
        if getattr(self._on_challenge, "wants_session", False):  # e.g. to read the session's TLS channel
            return self._on_challenge(challenge, self)
        return self._on_challenge(challenge)

    def onJoin(self, details) -> None:
        self.welcome = details
        self.joined.callback(details)

    def onLeave(self, details) -> None:
        if not self.joined.called:
            self.joined.errback(Aborted(details))
        if not self.left.called:
            self.left.callback(details)
        self.disconnect()

    def onDisconnect(self) -> None:
        if not self.joined.called:
            self.joined.errback(ConnectionError("disconnected before joining"))
        if not self.disconnected.called:
            self.disconnected.callback(None)


def recv_until_closed(s) -> bytes:
    """Everything a blocking socket receives until the router closes or resets it (or its timeout)."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def answer_ticket(value: str):
    """An on_challenge for ticket authentication."""
    return lambda challenge: value


def answer_wampcra(secret: str):
    """An on_challenge for WAMP-CRA, salted or not."""
    def sign(challenge):
        key = secret
        if "salt" in challenge.extra:
            key = derive_key(secret, challenge.extra["salt"], challenge.extra["iterations"], challenge.extra["keylen"])
        return compute_wcs(key, challenge.extra["challenge"]).decode()
    return sign


async def still_serving(node, serializer: str = "json") -> None:
    """A fresh client registers and calls: the router still serves after whatever a test threw at it."""
    client = await connect(node.url, serializer)
    await client.register(lambda: "ok", "com.example.alive")
    assert await client.call("com.example.alive") == "ok"
    client.leave()
    await with_timeout(client.left)


def _serializer(name: str):
    return {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}[name]()


async def connect(url: str, serializer: str = "json", realm: str = "realm1", tls=None, unix: str | None = None,
                  bind: str | None = None, **kw) -> Client:
    """Join a realm and return the session; raises Aborted if the router says no.
    A `rs://host:port` (or `rss://`) url connects over RawSocket, anything else over WebSocket;
    `tls`: Twisted client TLS options (for wss:// and rss://); `unix`: connect to this socket path;
    `bind`: the local address to connect from (127.0.0.2: another client host on loopback)."""
    holder: list[Client] = []

    def make() -> Client:
        c = Client(ComponentConfig(realm), **kw)
        holder.append(c)
        return c

    if url.startswith(("rs://", "rss://")):
        factory = WampRawSocketClientFactory(make, serializer=_serializer(serializer))
    else:
        factory = WampWebSocketClientFactory(make, url=url, serializers=[_serializer(serializer)])
    host, port = _hostport(url)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, bindAddress=(bind, 0) if bind else None) \
        if unix is None else \
        endpoints.UNIXClientEndpoint(reactor, unix)
    if tls is not None:
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    await with_timeout(endpoint.connect(factory))
    for _ in range(int(TIMEOUT / 0.01)):
        if holder:
            break
        await sleep(0.01)
    if not holder:
        raise ConnectionError(f"connected to {url} but no WAMP session opened within {TIMEOUT} s")
    client = holder[0]
    await with_timeout(client.joined)
    return client


async def with_timeout(d: defer.Deferred, seconds: float = TIMEOUT):
    d.addTimeout(seconds, reactor)
    return await d


def _hostport(url: str) -> tuple[str, int]:
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def _not_json(name: str):
    raise ValueError(f"the router sent {name}, which is not JSON")


# -- a raw WebSocket peer ------------------------------------------------------------------------
class _RawProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.peer._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.peer._received(payload)

    def onClose(self, wasClean: bool, code, reason) -> None:
        self.factory.peer._closed(code, reason)


class _Raw:
    """What both raw peers share: a serializer, a queue of decoded messages, HELLO."""

    def __init__(self, serializer: str) -> None:
        self.serializer = serializer
        self.opened: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.inbox: defer.DeferredQueue = defer.DeferredQueue()

    def encode(self, msg) -> bytes:
        if self.serializer == "cbor":
            return cbor2.dumps(msg)
        return json.dumps(msg).encode() if self.serializer == "json" else msgpack.packb(msg, use_bin_type=True)

    def decode(self, payload: bytes):
        if self.serializer == "cbor":
            return cbor2.loads(payload)
        if self.serializer == "json":
            return json.loads(payload, parse_constant=_not_json)  # what reaches a JSON peer must be JSON
        return msgpack.unpackb(payload, raw=False)

    async def recv(self, seconds: float = TIMEOUT):
        return await with_timeout(self.inbox.get(), seconds)

    async def hello(self, realm: str = "realm1", roles: dict | None = None) -> list:
        if roles is None:
            roles = {"caller": {}, "callee": {}, "publisher": {}, "subscriber": {}}
        self.send([1, realm, {"roles": roles}])
        return await self.recv()


class RawPeer(_Raw):
    """Speaks WebSocket but not WAMP: sends whatever a test gives it, decodes what comes back."""

    def __init__(self, serializer: str) -> None:
        super().__init__(serializer)
        self.proto: _RawProtocol | None = None

    def _opened(self, proto) -> None:
        self.http_headers = proto.http_headers
        self.proto = proto
        self.opened.callback(self)

    def _received(self, payload: bytes) -> None:
        self.inbox.put(self.decode(payload))

    def _closed(self, code, reason) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"WebSocket refused: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback((code, reason))

    def send(self, msg) -> None:
        self.proto.sendMessage(self.encode(msg), self.serializer != "json")

    def send_raw(self, payload: bytes, binary: bool = True) -> None:
        self.proto.sendMessage(payload, binary)

    def drop(self) -> None:
        self.proto.dropConnection(abort=True)


async def raw_connect(url: str, serializer: str = "json", protocols: list[str] | None = None,
                      headers: dict | None = None, bind: str | None = None) -> RawPeer:
    """A raw peer; `bind` is its source address (another loopback address, e.g. 127.0.0.2)."""
    peer = RawPeer(serializer)
    factory = WebSocketClientFactory(url, protocols=protocols if protocols is not None else [f"wamp.2.{serializer}"],
                                     headers=headers)
    factory.protocol = _RawProtocol
    factory.peer = peer
    host, port = _hostport(url)
    reactor.connectTCP(host, port, factory, bindAddress=(bind, 0) if bind else None)
    await with_timeout(peer.opened)
    return peer


# -- a raw RawSocket peer -------------------------------------------------------------------------
class RawSocketPeer(_Raw, protocol.Protocol):
    """RawPeer's twin over RawSocket, driven frame by frame. It announces a maximum of 2^(9+exponent)
    octets (0: 512 bytes, 15: 16 MiB) and counts the PONGs it gets."""

    def __init__(self, serializer: str = "json", exponent: int = 15) -> None:
        super().__init__(serializer)
        self.exponent = exponent
        self.buf = b""
        self.pongs = 0
        self.proto = self  # as RawPeer: peer.proto.transport is the client's TCP transport

    def connectionMade(self) -> None:
        ser_id = {"json": 1, "msgpack": 2, "cbor": 3}[self.serializer]
        self.transport.write(bytes((0x7F, (self.exponent << 4) | ser_id, 0, 0)))

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if not self.opened.called:
            if len(self.buf) < 4:
                return
            self.buf = self.buf[4:]
            self.opened.callback(self)
        while len(self.buf) >= 4:
            n = int.from_bytes(self.buf[1:4], "big")
            if len(self.buf) < 4 + n:
                return
            kind, payload, self.buf = self.buf[0], self.buf[4:4 + n], self.buf[4 + n:]
            if kind == 0:
                self.inbox.put(self.decode(payload))
            elif kind == 2:
                self.pongs += 1

    def connectionLost(self, reason=None) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def send(self, msg) -> None:
        self.send_frame(self.encode(msg))

    def ping(self, payload: bytes) -> None:
        self.send_frame(payload, kind=1)

    def send_frame(self, payload: bytes, kind: int = 0) -> None:
        self.transport.write(bytes((kind,)) + len(payload).to_bytes(3, "big") + payload)

    def drop(self) -> None:
        self.transport.abortConnection()


async def rawsocket_connect(url: str, serializer: str = "json", exponent: int = 15) -> RawSocketPeer:
    """A raw RawSocket peer at `rs://host:port`, past the handshake (no HELLO yet)."""
    peer = RawSocketPeer(serializer, exponent)
    host, port = _hostport(url)
    await with_timeout(endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, host, port), peer))
    await with_timeout(peer.opened)
    return peer


async def raw_callee_and_caller(url: str, procedure: str) -> tuple[RawPeer, RawPeer, int]:
    """Two joined raw peers, the first having registered `procedure`; returns them and the registration id."""
    callee = await raw_connect(url)
    caller = await raw_connect(url)
    await callee.hello()
    await caller.hello()
    callee.send([64, 1, {}, procedure])
    registered = await callee.recv()
    assert registered[0] == 65, registered
    return callee, caller, registered[2]
