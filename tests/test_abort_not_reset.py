"""An ABORT ends a connection with a FIN, not a TCP reset (issue 23, item 6): a client that is slow to
answer the WebSocket closing handshake after an ABORT (an authentication storm keeps clients busy)
still reads the ABORT and then sees the connection end, not ECONNRESET."""

from __future__ import annotations

import base64
import json
import os
import socket
import time

import pytest_twisted
from twisted.internet import threads

ensure = pytest_twisted.ensureDeferred


def _frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload), 0, 0, 0, 0)) + payload  # masked with a zero key


def _aborted_then(port: int, wait: float) -> tuple[bytes, str]:
    """A WebSocket client that sends a HELLO for a realm that does not exist, then neither reads nor
    answers for `wait` seconds, then reads: what it got, and how the connection ended."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n"
               "\r\n").encode())
    s.sendall(_frame(json.dumps([1, "com.nowhere", {"roles": {"caller": {}}}])))
    time.sleep(wait)  # busy: the closing handshake is not answered in time
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
        return data, "fin"
    except ConnectionResetError:
        return data, "reset"
    finally:
        s.close()


@ensure
async def test_an_aborted_client_slow_to_close_reads_the_abort_and_gets_no_reset(make_node):
    node = make_node()
    data, end = await threads.deferToThread(_aborted_then, node.port, 2.5)
    assert b"wamp.error.no_such_realm" in data, data
    assert end == "fin"  # on main: a reset once autobahn's 1 s closing-handshake timeout drops the connection
