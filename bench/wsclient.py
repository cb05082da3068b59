"""A minimal WebSocket client on a bare Twisted Protocol, speaking pre-encoded WAMP.

Why not Autobahn's client: the load generators share 2 cores with the router, so every microsecond
they spend is taken from the process being measured. This client masks with the all-zero key
(valid per RFC 6455 §5.3: the server still unmasks, so its cost is unchanged, but the client does
no XOR), frames by hand and never decodes what it only needs to count.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import msgpack
from twisted.internet import protocol, reactor

HELLO, WELCOME, ABORT, GOODBYE = 1, 2, 3, 6
ERROR, PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 8, 16, 17, 32, 33, 36
CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70

ROLES = {"caller": {}, "callee": {}, "publisher": {}, "subscriber": {}}
_PACK_LEN16 = struct.Struct("!H").pack
_PACK_LEN64 = struct.Struct("!Q").pack
_UNPACK_LEN16 = struct.Struct("!H").unpack_from
_UNPACK_LEN64 = struct.Struct("!Q").unpack_from


class Codec:
    """Encode/decode WAMP for one serializer, and the WebSocket opcode it travels in."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "msgpack":
            self.encode = msgpack.Packer(use_bin_type=True).pack
            self.decode = msgpack.unpackb
            self.opcode = 2
        elif name == "json":
            dumps = json.JSONEncoder(separators=(",", ":")).encode
            self.encode = lambda msg: dumps(msg).encode()
            self.decode = json.loads
            self.opcode = 1
        else:
            raise ValueError(f"unsupported serializer {name!r}")

    def frame(self, msg: list) -> bytes:
        return frame(self.encode(msg), self.opcode)


def frame(payload: bytes, opcode: int) -> bytes:
    """A masked client frame (FIN set) with the all-zero masking key."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _PACK_LEN16(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _PACK_LEN64(n)
    return head + b"\x00\x00\x00\x00" + payload


CLOSE_FRAME = frame(struct.pack("!H", 1000), 8)


class WsClient(protocol.Protocol):
    """One WebSocket connection. Subclasses override `opened()` and `on_frame(payload)`;
    `count_only` makes the parser skip building payloads (subscribers just count EVENTs)."""

    count_only = False

    def __init__(self, host: str, path: str, subprotocol: str) -> None:
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: "
                         f"{base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
                         f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n").encode()
        self._buf = b""
        self._upgraded = False
        self.frames = 0  # data frames received
        self.closed = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.failed(buf[:end].decode(errors="replace").split("\r\n")[0])
                self.transport.abortConnection()
                return
            self._upgraded = True
            buf = buf[end + 4:]
            self.opened()
        pos, size = 0, len(buf)
        count_only = self.count_only
        while size - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = _UNPACK_LEN16(buf, start)[0]
                start += 2
            elif n == 127:
                if size - pos < 10:
                    break
                n = _UNPACK_LEN64(buf, start)[0]
                start += 8
            end = start + n
            if end > size:
                break
            pos = end
            op = b0 & 0x0F
            if op == 1 or op == 2:
                self.frames += 1
                if count_only:
                    self.on_count()
                else:
                    self.on_frame(buf[start:end])
            elif op == 8:
                self.closed = True
                self.transport.loseConnection()
                return
            elif op == 9:
                self.transport.write(frame(buf[start:end], 10))
        self._buf = buf[pos:] if pos < size else b""

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        """Start the WebSocket closing handshake; the server then closes the TCP connection."""
        if not self.closed:
            self.transport.write(CLOSE_FRAME)

    # -- for subclasses ----------------------------------------------------------------------------
    def opened(self) -> None:
        pass

    def on_frame(self, payload: bytes) -> None:
        pass

    def on_count(self) -> None:
        pass

    def failed(self, why: str) -> None:
        pass


class ClientFactory(protocol.ClientFactory):
    """Builds `cls(host, path, subprotocol, **kw)` for one URL; `lost(proto)` runs when it goes."""

    noisy = False

    def __init__(self, url: str, serializer: str, cls: type[WsClient], lost: Callable | None = None,
                 **kw: Any) -> None:
        u = urlparse(url)
        self.host, self.port, self.path = u.hostname, u.port or 80, u.path or "/"
        self.subprotocol = f"wamp.2.{serializer}"
        self.cls = cls
        self.kw = kw
        self.lost = lost

    def buildProtocol(self, addr: Any) -> WsClient:
        p = self.cls(f"{self.host}:{self.port}", self.path, self.subprotocol, **self.kw)
        p.factory = self
        return p

    def connect(self) -> None:
        reactor.connectTCP(self.host, self.port, self, timeout=30)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if self.lost is not None:
            self.lost(None)
