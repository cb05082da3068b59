"""WAMP over RawSocket (TCP), per the WAMP spec's "RawSocket Transport".

Handshake: the client sends 0x7F, (max length exponent << 4 | serializer id), 0, 0; the router
answers in kind with its own maximum, or with an error code in the high nibble. Then every frame is a
4-byte header (low 3 bits of the first byte: 0 message, 1 PING, 2 PONG; then a 24-bit length) and
the payload. Twisted's Int32StringReceiver cannot tell PINGs from lengths, so framing is done here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from twisted.internet import protocol, reactor
from twisted.logger import Logger

from router import lograte, wamp
from router.config import ListenerConfig
from router.protocol import SLOW_CONSUMER, WampProtocol
from router.serializers import RAWSOCKET_IDS, Serializer, create
from router.transport.flow import HELD, FlowControlled
from router.transport.tls import tls_error

if TYPE_CHECKING:
    from router.edges import Listeners

MAGIC = 0x7F
MESSAGE, PING, PONG = 0, 1, 2
# Handshake error codes (high nibble of the second octet).
ERR_SERIALIZER_UNSUPPORTED, ERR_MAX_LENGTH_UNACCEPTABLE, ERR_RESERVED_BITS, ERR_MAX_CONNECTIONS = 1, 2, 3, 4


def _header(kind: int, length: int) -> bytes:
    return bytes((kind, (length >> 16) & 0xFF, (length >> 8) & 0xFF, length & 0xFF))


def length_exponent(max_size: int) -> int:
    """The handshake's 4-bit exponent: it announces 2^(9 + n) octets, so the largest n not above max_size."""
    return max(0, min(15, int(math.log2(max(max_size, 512))) - 9))


class RawSocketCodec:
    """Serializer plus RawSocket framing, shared by the connections of one listener and serializer."""

    __slots__ = ("serializer",)

    def __init__(self, serializer: Serializer) -> None:
        self.serializer = serializer

    def prepare(self, msg: list) -> bytes:
        payload = self.serializer.encode(msg)
        return _header(MESSAGE, len(payload)) + payload


class WampRawSocketProtocol(FlowControlled, protocol.Protocol):
    log = Logger()

    wamp: WampProtocol | None = None
    _handshake_timer = None
    _refused = False  # not counted in the node's connections (limits.max_pending_connections)
    _admitted_as: str | None = None  # the client address admission counts this connection under

    def connectionMade(self) -> None:
        self._buf = bytearray()
        node = self.factory.node
        if not node.connection_opened(self.peer_name()):
            self._refused = True
            self.transport.write(bytes((MAGIC, ERR_MAX_CONNECTIONS << 4, 0, 0)))  # the spec's error 4
            self._close()
            return
        host = getattr(self.transport.getPeer(), "host", None)  # None: a unix socket
        refused = node.admission.connection()
        if refused is None and host is not None:
            refused = node.admission.address(host)
            if refused is None:
                self._admitted_as = host
        if refused is not None:  # limits (router/transport/admission.py): the same error 4
            self.transport.write(bytes((MAGIC, ERR_MAX_CONNECTIONS << 4, 0, 0)))
            self._close()
            return
        self._peer_max = 0  # the largest message the client accepts
        self.start_flow_control()
        timeout = self.factory.config.hello_timeout
        self._handshake_timer = reactor.callLater(timeout, self._no_handshake) if timeout else None

    def _no_handshake(self) -> None:
        self._handshake_timer = None
        if self.wamp is None:
            lograte.refused(self.log, "warn", "rawsocket_no_handshake", lograte.host(self.peer_name()),
                            "closing RawSocket from {peer}: no handshake in time", peer=self.peer_name())
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self.wamp is None:
            if len(buf) < 4:
                return
            if not self._handshake(bytes(buf[:4])):
                return
            del buf[:4]
        limit = self.factory.max_length
        while len(buf) >= 4 and self.wamp is not None:
            kind = buf[0]
            length = (buf[1] << 16) | (buf[2] << 8) | buf[3]
            if kind > PONG:
                self._fail(wamp.PROTOCOL_VIOLATION, f"RawSocket frame type {kind} is reserved")
                return
            if length > limit:
                self._fail(wamp.PAYLOAD_SIZE_EXCEEDED,
                           f"received RawSocket message of {length} octets exceeds the limit of {limit}")
                return
            if len(buf) < 4 + length:
                return
            payload = bytes(buf[4:4 + length])
            del buf[:4 + length]
            if kind == MESSAGE:
                self.wamp.on_message(payload)
            elif kind == PING and self.admit(length + 4, True):  # a PING flood from a peer that never reads
                self.transport.write(_header(PONG, length) + payload)

    def _handshake(self, octets: bytes) -> bool:
        if octets[0] != MAGIC:
            lograte.refused(self.log, "warn", "rawsocket_bad_handshake", lograte.host(self.peer_name()),
                            "RawSocket from {peer}: not a RawSocket handshake", peer=self.peer_name())
            self._close()
            return False
        if octets[2] or octets[3]:
            return self._refuse(ERR_RESERVED_BITS, "reserved handshake octets are not zero")
        name = RAWSOCKET_IDS.get(octets[1] & 0x0F)
        codec = self.factory.codecs.get(name)
        if codec is None:
            return self._refuse(ERR_SERIALIZER_UNSUPPORTED, f"serializer id {octets[1] & 0x0F} not offered")
        self._peer_max = 2 ** (9 + (octets[1] >> 4))
        self.transport.write(bytes((MAGIC, (self.factory.exponent << 4) | (octets[1] & 0x0F), 0, 0)))
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        addr = self.transport.getPeer()
        self.codec = codec
        peer = (getattr(addr, "host", "unix"), getattr(addr, "port", 0))  # a unix socket has neither
        self.wamp = WampProtocol(self.factory.node, self, codec, peer,
                                 self.factory.config.hello_timeout)
        return True

    def _refuse(self, code: int, why: str) -> bool:
        lograte.refused(self.log, "warn", "rawsocket_refused", lograte.host(self.peer_name()),
                        "RawSocket from {peer} refused: {why}", peer=self.peer_name(), why=why)
        self.transport.write(bytes((MAGIC, code << 4, 0, 0)))
        self._close()
        return False

    def _fail(self, reason: str, message: str) -> None:
        self.wamp.abort(reason, message)
        self._buf.clear()

    def connectionLost(self, reason: object = None) -> None:
        why = tls_error(getattr(reason, "value", None))
        if why is not None:
            self.log.info("TLS with {peer} failed: {why}", peer=self.peer_name(), why=why)
        if not self._refused:
            self.factory.node.connection_closed()
        if self._admitted_as is not None:
            self.factory.node.admission.closed(self._admitted_as)
            self._admitted_as = None
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        if self.wamp is not None:
            self.wamp.on_close()
        self.free_write_buffer()

    # -- the Wire interface used by WampProtocol -------------------------------------------------
    def send_payload(self, payload: bytes, bulk: bool) -> str | None:
        if len(payload) > self._peer_max:  # the peer announced what it takes in the handshake
            return wamp.PAYLOAD_SIZE_EXCEEDED
        admitted = self.admit(len(payload) + 4, bulk)
        if not admitted:
            return SLOW_CONSUMER
        data = _header(MESSAGE, len(payload)) + payload
        if admitted is HELD:
            self.hold(lambda: self.transport.write(data), len(data))
            return None
        self.transport.write(data)
        return None

    def send_prepared(self, frame: bytes) -> str | None:
        if len(frame) - 4 > self._peer_max:
            return wamp.PAYLOAD_SIZE_EXCEEDED
        if self.admit(len(frame), True) is not True:  # bulk: never held
            return SLOW_CONSUMER
        self.transport.write(frame)
        return None

    def close_transport(self, reason: str) -> None:
        self._close()

    def _close(self) -> None:
        """Close once what is queued is written. Twisted closes a connection with a registered producer
        only when the producer is gone: with it still registered (paused, the peer having lagged), the
        connection would stay open for good after the peer had read everything."""
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def listener_config(self) -> ListenerConfig:
        return self.factory.config

    def drop(self) -> None:
        self.transport.abortConnection()


class WampRawSocketFactory(protocol.Factory):
    protocol = WampRawSocketProtocol
    noisy = False

    def __init__(self, node: Listeners, config: ListenerConfig) -> None:
        self.node = node
        self.config = config
        self.codecs = {name: RawSocketCodec(create(name, config.max_depth)) for name in config.serializers}
        self.exponent = length_exponent(config.max_message_size)
        self.max_length = 2 ** (9 + self.exponent)
