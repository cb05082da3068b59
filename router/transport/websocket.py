"""WAMP over WebSocket, on Autobahn's Twisted WebSocket server.

The subprotocol (`wamp.2.json`, `wamp.2.msgpack`, `wamp.2.cbor`) picks the serializer; outgoing
flow control is `router.transport.flow`, so a slow consumer's queue is never the router's memory.
"""

from __future__ import annotations

import sys
from collections import deque
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from router import http, lograte, wamp
from router.auth.cookie import COOKIE_NAME
from router.config import ListenerConfig
from router.protocol import SLOW_CONSUMER, WampProtocol
from router.serializers import Serializer, create
from router.transport.flow import HELD, FlowControlled
from router.transport.forwarded import client_address, networks
from router.transport.tls import tls_error

if TYPE_CHECKING:
    from router.edges import Listeners

SUBPROTOCOL_PREFIX = "wamp.2."
# The opening HTTP request (request line and headers) may be this long; a longer one gets HTTP 431
# and the connection closes. Autobahn would buffer it without bound and rescan all of it per chunk.
MAX_HANDSHAKE_SIZE = 64 * 1024
FINAL_CLOSE = 5.0  # seconds a graceful end (FIN) may take before the connection is reset
_END_OF_HEADER = b"\r\n\r\n"


class WebSocketCodec:
    """Serializer plus WebSocket framing, shared by every connection of one factory and serializer."""

    __slots__ = ("serializer", "_prepare", "_binary")

    def __init__(self, factory: WebSocketServerFactory, serializer: Serializer) -> None:
        self.serializer = serializer
        self._prepare = factory.prepareMessage
        self._binary = serializer.binary

    def prepare(self, msg: list) -> Any:
        payload = self.serializer.encode(msg)
        frame = self._prepare(payload, self._binary)
        frame.size = len(payload)  # checked against each receiver's limit
        return frame


_OPEN = WebSocketServerProtocol.STATE_OPEN
_NO_QUEUE: tuple = ()  # stands for Autobahn's empty send queue until a queued write needs a real one

# Autobahn server-protocol attributes no code reads after the opening handshake (checked against autobahn 26).
# `_transport_details` (Autobahn's WAMP-session view of the transport) is read by its _onOpen, just before ours.
_HANDSHAKE_ONLY = ("http_headers", "http_request_data", "http_response_data", "http_status_line", "_wskey",
                   "http_request_params", "websocket_protocols", "websocket_extensions", "_transport_details")


def _framed(size: int) -> int:
    """Bytes on the wire for a payload of `size` in one unmasked frame: the header counts against the
    budget too (it is a tenth of a short answer such as SUBSCRIBED)."""
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


class WampWebSocketProtocol(FlowControlled, WebSocketServerProtocol):
    # Not `log`: Autobahn's protocol calls its txaio `self.log.debug(...)` several times per frame, and
    # txaio makes calls below the level no-ops; a twisted Logger there would build an event for each
    # (measured: a third of the router's CPU per routed message).
    _log = Logger()

    wamp: WampProtocol | None = None
    _hard_drop = False
    _final_close = None  # DelayedCall: resets a connection whose graceful end takes too long

    cookie: str | None = None
    forwarded_for: str | None = None  # the client's address, when a trusted proxy says so

    def onConnect(self, request: Any) -> str | tuple[str, dict]:
        factory: WampWebSocketFactory = self.factory
        if request.path != factory.config.path:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, f"no WAMP endpoint at {wamp.quote(request.path)}")
        if factory.trusted_proxies:
            host = self.transport.getPeer().host
            self.forwarded_for = client_address(host, request.headers.get("x-forwarded-for"), factory.trusted_proxies)
            refused = factory.node.admission.address(self.forwarded_for or host)  # the client's, now known
            if refused is not None:  # counted and logged (once per LOG_EVERY) by admission: no line here
                self._quiet_refusal = True
                raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, f"too many connections (limits.{refused})")
            self._admitted_as = self.forwarded_for or host
        for proto in request.protocols:
            if proto in factory.codecs:
                self._subprotocol = proto
                return self._track_cookie(request, proto)
        offered = wamp.quote(", ".join(request.protocols) or "none")
        raise ConnectionDeny(ConnectionDeny.BAD_REQUEST,
                             f"no supported WAMP subprotocol offered ({offered}); "
                             f"this router speaks {', '.join(factory.codecs)}")

    def _track_cookie(self, request: Any, proto: str) -> str | tuple[str, dict]:
        """Keep the client's tracking cookie, or set a new one (cookie authentication)."""
        node = self.factory.node
        if not node.tracks_cookies():
            return proto
        jar = SimpleCookie()
        try:
            jar.load(request.headers.get("cookie", ""))
        except CookieError:
            pass
        morsel = jar.get(COOKIE_NAME)
        if morsel is not None and 20 <= len(morsel.value) <= 64:
            self.cookie = morsel.value
            return proto
        self.cookie = node.cookies.new_id()
        max_age = max(r.auth.cookie_max_age for r in node.realms.list())
        return proto, {"Set-Cookie": f"{COOKIE_NAME}={self.cookie}; Max-Age={int(max_age)}; HttpOnly; "
                                     f"SameSite=Strict; Path=/"}

    def onOpen(self) -> None:
        # The opening handshake's raw request, parsed headers and response are only read during the
        # handshake; held for the connection's life they are a fifth of an idle session's memory.
        for name in _HANDSHAKE_ONLY:
            setattr(self, name, None)
        factory: WampWebSocketFactory = self.factory
        addr = self.transport.getPeer()
        peer = (sys.intern(getattr(addr, "host", "?")), getattr(addr, "port", 0))  # one string per client host
        if self.forwarded_for is not None:
            peer = (sys.intern(self.forwarded_for), 0)  # the proxy's port says nothing of the client
        self.start_flow_control()
        self.wamp = WampProtocol(factory.node, self, factory.codecs[self._subprotocol], peer,
                                 factory.config.hello_timeout, self.cookie)

    _request: bytearray | None = None  # the opening request while it is incomplete

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's adapter, minus the debug line whose arguments it formats for every chunk read.
        if self.state != WebSocketServerProtocol.STATE_CONNECTING:
            if self.state != WebSocketServerProtocol.STATE_CLOSED:
                self._dataReceived(data)
            return
        self._handshake_data(data)

    def _handshake_data(self, data: bytes) -> None:
        """Collect the opening request here, searching only the new bytes for its end, and hand it to
        Autobahn once complete: linear in its size, and refused past MAX_HANDSHAKE_SIZE."""
        request = self._request
        if request is None:
            end = data.find(_END_OF_HEADER, 0, MAX_HANDSHAKE_SIZE)
            if end >= 0:
                self._request_complete(data, end)  # the usual case: the whole request in one read
                return
            if len(data) < MAX_HANDSHAKE_SIZE:
                self._request = bytearray(data)
                return
        else:
            start = max(0, len(request) - 3)
            request += data
            end = request.find(_END_OF_HEADER, start, MAX_HANDSHAKE_SIZE)
            if end >= 0:
                del self._request  # back to the class's None
                self._request_complete(bytes(request), end)
                return
            if len(request) < MAX_HANDSHAKE_SIZE:
                return
            del self._request
        lograte.refused(self._log, "warn", "websocket_handshake_size", lograte.host(self.peer_name()),
                        "refusing WebSocket from {peer}: opening handshake over {max} bytes", peer=self.peer_name(),
                        max=MAX_HANDSHAKE_SIZE)
        self.wasClean = True  # refused on purpose: no second line from Autobahn's drop
        self.sendHttpErrorResponse(431, "Request Header Fields Too Large")
        self.dropConnection(abort=False)

    def _request_complete(self, data: bytes, end: int) -> None:
        """A request for the WAMP path goes to Autobahn (one `startswith`); a plain HTTP request for
        another path (/health, a probe) is answered by router.http and the connection closed."""
        factory: WampWebSocketFactory = self.factory
        prefix = factory.wamp_request_line
        if data.startswith(prefix) and data[len(prefix):len(prefix) + 1] in (b" ", b"?"):
            self._dataReceived(data)
            return
        plain = http.plain_request(data[:end])
        if plain is None:
            self._dataReceived(data)  # an upgrade elsewhere, or a bad request: Autobahn refuses it
            return
        host = getattr(self.transport.getPeer(), "host", None)  # None: a unix socket
        if factory.trusted_proxies and host is not None:
            host = client_address(host, plain.headers.get("x-forwarded-for"), factory.trusted_proxies) or host
        answered = http.answer(factory.node, plain, host)
        if isinstance(answered, Deferred):  # it needs Redis or another node (the status page)
            answered.addCallback(self._answered, plain).addErrback(lambda f: self.dropConnection(abort=True))
        else:
            self._answered(answered, plain)

    def _answered(self, answered: tuple[int, bytes], plain: Any) -> None:
        status, reply = answered
        if self.transport is None or getattr(self.transport, "disconnected", False):
            return  # the client went while the answer was being gathered
        self._log.debug("HTTP {method} {path} from {peer}: {status}", method=plain.method,
                        path=wamp.quote(plain.path), peer=self.peer_name(), status=status)
        self.wasClean = True  # answered on purpose: no line from Autobahn's drop
        self.sendData(reply)
        self.dropConnection(abort=False)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        """A refused opening handshake (ours, or a request Autobahn finds bad) is one log line, not
        Autobahn's two (its info line, then a warning as it drops the connection). Autobahn quotes
        the client's bytes in its reasons: a short, escaped text instead, never raw control characters."""
        reason = wamp.printable(str(reason))
        if not self._quiet_refusal:
            lograte.refused(self._log, "warn", "websocket_refused", lograte.host(self.peer_name()),
                            "refusing WebSocket from {peer}: {reason}", peer=self.peer_name(), reason=reason)
        self.wasNotCleanReason = reason
        self.wasClean = True  # refused on purpose: no second line from Autobahn's drop
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.dropConnection(abort=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.current_frame_masker = None  # the finished frame's unmasker; the next frame makes its own
        self.wamp.on_message(payload)

    def onPing(self, payload: bytes) -> None:
        # Autobahn answers every PING with a PONG: bulk under the peer's budget, like a RawSocket PONG,
        # so that a client that pings and never reads cannot grow the write buffer.
        if self.state == WebSocketServerProtocol.STATE_OPEN and self.admit(_framed(len(payload or b"")), True):
            self.sendPong(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.wamp is not None:
            self.wamp.on_close()

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        # Tell the WAMP peer why before the WebSocket layer fails the connection (close code 1009).
        if self.wamp is not None:
            lograte.refused(self.wamp.log, "warn", "payload_size_exceeded", lograte.host(self.peer_name()),
                            "peer {peer}: {reason}", peer=self.peer_name(), reason=reason)
            self.wamp.send([wamp.ABORT, {"message": reason}, wamp.PAYLOAD_SIZE_EXCEEDED])
            self.wamp.on_close()
            self.failByDrop = False  # an abortive drop would discard the ABORT still in the write buffer
        super()._max_message_size_exceeded(msg_size, max_msg_size, reason)

    _refused = False  # not counted in the node's connections (limits.max_pending_connections)
    _admitted_as: str | None = None  # the client address admission counts this connection under
    _quiet_refusal = False  # refused by admission: its log line is admission's, not one per connection

    def _connectionMade(self) -> None:
        super()._connectionMade()
        # Autobahn queues only chopped or synced writes, which the router never asks for: no deque
        # (760 bytes) per connection until one is needed (see sendData).
        self.send_queue = _NO_QUEUE
        node = self.factory.node
        if not node.connection_opened(self.peer_name()):
            self._refused = True
            self._unavailable()
            return
        admission = node.admission
        refused = admission.connection()
        if refused is None and not self.factory.trusted_proxies:  # the TCP peer is the client
            host = getattr(self.transport.getPeer(), "host", None)  # None: a unix socket
            if host is not None:
                refused = admission.address(host)
                if refused is None:
                    self._admitted_as = host
        if refused is not None:
            self._unavailable()

    def _unavailable(self) -> None:
        """Refused before reading anything: HTTP 503 (retry later), and close."""
        self.wasClean = True  # refused on purpose: no line from Autobahn's drop
        self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
        self.transport.loseConnection()
        self.state = WebSocketServerProtocol.STATE_CLOSED  # read nothing more from it

    def connectionLost(self, reason: Any = connectionDone) -> None:
        why = tls_error(reason.value)
        if why is not None:  # Autobahn would log it as an error: it is the client's, one info line
            self._log.info("TLS with {peer} failed: {why}", peer=self.peer_name(), why=why)
            reason = Failure(ConnectionLost(f"TLS: {why}"))
        try:
            super().connectionLost(reason)
        finally:
            if not self._refused:
                self.factory.node.connection_closed()
            if self._admitted_as is not None:
                self.factory.node.admission.closed(self._admitted_as)
                self._admitted_as = None
            self.free_write_buffer()
            if self._final_close is not None and self._final_close.active():
                self._final_close.cancel()
            self._final_close = None

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Autobahn's sendData, minus the debug line whose arguments it formats on every write (a fifth
        of the router's CPU in a fan-out). Anything but a plain write on an open connection is Autobahn's."""
        if sync or chopsize or self.send_queue or self.logOctets or self.state != WebSocketServerProtocol.STATE_OPEN:
            if (sync or chopsize) and self.send_queue is _NO_QUEUE:
                self.send_queue = deque()  # Autobahn appends only in these cases
            super().sendData(data, sync, chopsize)
            return
        self.transport.write(data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)

    # -- the Wire interface used by WampProtocol -------------------------------------------------
    def send_payload(self, payload: bytes, bulk: bool) -> str | None:
        if len(payload) > self.maxMessagePayloadSize:  # the listener's max_message_size, on its protocol class
            return wamp.PAYLOAD_SIZE_EXCEEDED
        if self.state != _OPEN:
            return None  # closing: nothing more reaches the peer, and nothing is owed
        admitted = self.admit(_framed(len(payload)), bulk)
        if not admitted:
            return SLOW_CONSUMER
        if admitted is HELD:
            binary = self.factory.binary[self._subprotocol]
            self.hold(lambda: self.state == _OPEN and self.sendMessage(payload, binary), _framed(len(payload)))
            return None
        self.sendMessage(payload, self.factory.binary[self._subprotocol])
        return None

    def send_prepared(self, frame: Any) -> str | None:
        if frame.size > self.maxMessagePayloadSize:
            return wamp.PAYLOAD_SIZE_EXCEEDED
        if self.state != _OPEN:
            return None
        if self.admit(len(frame.payloadHybi), True) is not True:  # bulk: never held
            return SLOW_CONSUMER
        self.sendPreparedMessage(frame)
        return None

    def listener_config(self) -> ListenerConfig:
        return self.factory.config

    def drop(self) -> None:
        """A peer that reads too slowly: reset at once, nothing more is flushed to it."""
        self._hard_drop = True
        self.dropConnection(abort=True)

    def dropConnection(self, abort: bool = False) -> None:
        """Autobahn resets the connection (abort) after the closing handshake and when a peer is slow to
        answer it: a client busy elsewhere (an authentication storm) could lose the ABORT it has not read
        yet to that reset. End with a FIN instead, so what was written reaches it; a peer that still
        holds the connection after FINAL_CLOSE seconds is reset then. Only `drop` resets at once."""
        if abort and not self._hard_drop and self.transport is not None:
            abort = False
            if self._final_close is None:
                self._final_close = reactor.callLater(FINAL_CLOSE, self._reset)
        super().dropConnection(abort)

    def _reset(self) -> None:
        self._final_close = None
        if self.transport is not None and self.transport.connected:
            self.transport.abortConnection()

    def close_transport(self, reason: str) -> None:
        self.sendClose(1000, reason[:100])


class WampWebSocketFactory(WebSocketServerFactory):
    protocol = WampWebSocketProtocol
    noisy = False  # no 'Starting factory' lines in the log

    def __init__(self, node: Listeners, config: ListenerConfig) -> None:
        # No url: the port may be 0 (ephemeral); onConnect checks the path itself. No Server header.
        super().__init__(server=None)
        self.wamp_request_line = b"GET " + config.path.encode()
        self.trusted_proxies = networks(config.trusted_proxies)
        self.node = node
        self.config = config
        self.codecs = {SUBPROTOCOL_PREFIX + name: WebSocketCodec(self, create(name, config.max_depth))
                       for name in config.serializers}
        self.binary = {p: c.serializer.binary for p, c in self.codecs.items()}
        self.setProtocolOptions(
            maxMessagePayloadSize=config.max_message_size,
            maxFramePayloadSize=config.max_message_size,
            autoPingInterval=config.auto_ping_interval or 0,
            autoPingTimeout=config.auto_ping_timeout or 0,
            openHandshakeTimeout=config.hello_timeout or 0,
            perMessageCompressionAccept=lambda offers: None,
            # The JSON serializer decodes UTF-8 itself; a bad frame then gets a WAMP ABORT, not just a close.
            utf8validateIncoming=False,
            webStatus=False,  # no Autobahn page (it names its version): a GET without upgrade gets 426
        )
        # Autobahn copies each protocol setting from the factory into every connection's __dict__ unless
        # the protocol class has it already (its documented per-protocol override). A subclass per
        # listener that holds them keeps ~30 entries out of every idle session.
        # With all of them on the class, CONFIG_ATTRS is emptied too: the copy loop, and the pformat of
        # its log line that Autobahn builds on every connection (a sixth of a session's open+close), go.
        settings = {name: getattr(self, name) for name in WampWebSocketProtocol.CONFIG_ATTRS}
        self.protocol = type(WampWebSocketProtocol.__name__, (WampWebSocketProtocol,),
                             {**{name: staticmethod(v) if callable(v) else v for name, v in settings.items()},
                              "CONFIG_ATTRS": ()})
