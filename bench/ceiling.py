"""The transport ceiling: a bare Autobahn/Twisted WebSocket server with the router's protocol options
and no WAMP, under the same client load. What it costs per message is the physical limit of the
stack Courtyard is built on, so the router's cost is reported as a ratio to it.

Paths:  /echo  every message is sent back to its sender (rpc, churn, idle sessions)
        /sub   a subscriber: its own messages are echoed (stand-ins for WELCOME, SUBSCRIBED)
        /pub   each message is framed once and sent to every /sub connection, then echoed back
               as the acknowledgement (pubsub fan-out)

`python -m bench.ceiling --port P` prints "listening P" once it accepts connections.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny

from bench.load import raise_nofile


class CeilingProtocol(WebSocketServerProtocol):
    path = "/echo"

    def onConnect(self, request: Any) -> str:
        if request.path not in ("/echo", "/pub", "/sub"):
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND)
        self.path = request.path
        for proto in request.protocols:
            if proto.startswith("wamp.2."):
                return proto
        raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "no wamp.2.* subprotocol offered")

    def onOpen(self) -> None:
        if self.path == "/sub":
            self.factory.subscribers.add(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.path == "/pub":
            frame = self.factory.prepareMessage(payload, isBinary)
            for sub in self.factory.subscribers:
                sub.sendPreparedMessage(frame)
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.subscribers.discard(self)


class CeilingFactory(WebSocketServerFactory):
    protocol = CeilingProtocol
    noisy = False

    def __init__(self) -> None:
        super().__init__()
        self.subscribers: set[CeilingProtocol] = set()
        # The same options router/transport/websocket.py sets, so only WAMP differs.
        self.setProtocolOptions(maxMessagePayloadSize=1048576, maxFramePayloadSize=1048576,
                                autoPingInterval=0, autoPingTimeout=0, openHandshakeTimeout=10,
                                perMessageCompressionAccept=lambda offers: None, utf8validateIncoming=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    raise_nofile()
    from twisted.internet import reactor

    port = reactor.listenTCP(args.port, CeilingFactory(), interface=args.host)
    print(f"listening {port.getHost().port}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
