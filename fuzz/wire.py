"""Client-side wire formats for the fuzzer: WAMP serializers, WebSocket and RawSocket framing.

Written by hand on asyncio streams, not with Autobahn: the fuzzer must be able to send what no
well-behaved client library would (odd opcodes, reserved bits, lying lengths, truncated frames).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import struct
from typing import Any

import cbor2
import msgpack

SERIALIZERS = ("json", "msgpack", "cbor")
RAWSOCKET_IDS = {"json": 1, "msgpack": 2, "cbor": 3}


def _to_json(value: Any) -> Any:
    t = type(value)
    if t is bytes:
        return "\x00" + base64.b64encode(value).decode("ascii")
    if t in (list, tuple):
        return [_to_json(v) for v in value]
    if t is dict:
        return {(k if type(k) in (str, int, float, bool) or k is None else repr(k)): _to_json(v)
                for k, v in value.items()}
    return value


def encode(serializer: str, msg: Any) -> bytes:
    """Encode leniently (JSON may carry NaN and escaped lone surrogates); raises if it cannot at all."""
    if serializer == "json":
        return json.dumps(_to_json(msg), separators=(",", ":")).encode("ascii")
    if serializer == "msgpack":
        return msgpack.packb(msg, use_bin_type=True)
    return cbor2.dumps(msg)


def decode(serializer: str, payload: bytes) -> Any:
    """Best-effort decode of what the router sends; None when it does not decode."""
    try:
        if serializer == "json":
            return json.loads(payload)
        if serializer == "msgpack":
            return msgpack.unpackb(payload, raw=False, strict_map_key=False)
        return cbor2.loads(payload)
    except Exception:  # noqa: BLE001 - the caller counts undecodable answers
        return None


# -- WebSocket (RFC 6455), client side -------------------------------------------------------------
def ws_frame(payload: bytes, opcode: int, fin: bool = True, rsv: int = 0, masked: bool = True,
             declared: int | None = None) -> bytes:
    """A client frame. `declared` lies about the payload length; `masked=False` breaks the RFC."""
    n = len(payload) if declared is None else declared
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0x0F)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mask_bit | n))
    elif n < 65536:
        head = bytes((b0, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mask_bit | 127)) + struct.pack("!Q", n & 0xFFFF_FFFF_FFFF_FFFF)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def ws_upgrade(host: str, port: int, path: str, protocols: str | None, extra: str = "") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


class WsParser:
    """Server frames (unmasked): yields (opcode, payload); reassembles fragmented messages."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._frag: list[bytes] = []
        self._frag_op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, at = struct.unpack_from("!H", self.buf, 2)[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, at = struct.unpack_from("!Q", self.buf, 2)[0], 10
            if b1 & 0x80:
                at += 4  # a masked server frame breaks the RFC, but read past it anyway
            if len(self.buf) < at + n:
                break
            payload = bytes(self.buf[at:at + n])
            del self.buf[:at + n]
            op, fin = b0 & 0x0F, b0 & 0x80
            if op == 0:
                self._frag.append(payload)
                if fin:
                    out.append((self._frag_op, b"".join(self._frag)))
                    self._frag = []
            elif op in (1, 2) and not fin:
                self._frag, self._frag_op = [payload], op
            else:
                out.append((op, payload))
        return out


# -- RawSocket ------------------------------------------------------------------------------------
def rs_handshake(serializer: str, exponent: int = 15) -> bytes:
    return bytes((0x7F, (exponent << 4) | RAWSOCKET_IDS[serializer], 0, 0))


def rs_frame(payload: bytes, kind: int = 0, declared: int | None = None) -> bytes:
    n = len(payload) if declared is None else declared
    return bytes((kind,)) + (n & 0xFFFFFF).to_bytes(3, "big") + payload


class RsParser:
    """The router's RawSocket stream: first its 4-byte handshake answer, then (kind, payload) frames."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.handshake: bytes | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        if self.handshake is None:
            if len(self.buf) < 4:
                return out
            self.handshake = bytes(self.buf[:4])
            del self.buf[:4]
        while len(self.buf) >= 4:
            n = int.from_bytes(self.buf[1:4], "big")
            if len(self.buf) < 4 + n:
                break
            out.append((self.buf[0] & 0x07, bytes(self.buf[4:4 + n])))
            del self.buf[:4 + n]
        return out


# With `--tls` (fuzz/__main__.py) every connection speaks TLS to the router's listeners: a client context
# that takes the router's self-signed certificate.
TLS: ssl.SSLContext | None = None


def client_tls() -> ssl.SSLContext:
    """A client context for the fuzzer's own router (its self-signed certificate, not checked)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_tcp(port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the router on `port` (over TLS with `--tls`)."""
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 22, ssl=TLS), timeout)
