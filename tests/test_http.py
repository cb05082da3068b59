"""Plain HTTP beside WAMP on the WebSocket port (issue 14): /health, 404 elsewhere, no version banner."""

from __future__ import annotations

import json
import socket

import pytest_twisted
from twisted.internet import defer, protocol, reactor, threads
from twisted.logger import LogLevel, globalLogPublisher

from router import __version__
from router.transport.websocket import MAX_HANDSHAKE_SIZE
from tests.helpers.nodes import start_node
from tests.wampclient import connect, recv_until_closed, with_timeout

ensure = pytest_twisted.ensureDeferred


def _exchange(port: int, request: bytes) -> bytes:
    """Send one request on a fresh connection; everything the router answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        return recv_until_closed(s)


async def _get(port: int, path: str, method: str = "GET", headers: str = "") -> tuple[int, dict, bytes]:
    raw = await threads.deferToThread(
        _exchange, port, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body


@ensure
async def test_health_says_ok_with_the_session_count(node):
    status, headers, body = await _get(node.port, "/health")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    before = json.loads(body)
    assert before["status"] == "ok" and before["node"] == "courtyard"
    client = await connect(node.url)
    status, _, body = await _get(node.port, "/health?probe=1")
    assert status == 200 and json.loads(body)["sessions"] == before["sessions"] + 1
    status, headers, body = await _get(node.port, "/health", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, _, body = await _get(node.port, "/nothing", "HEAD")
    assert status == 404 and body == b""
    status, headers, _ = await _get(node.port, "/health", "POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    await client.leave()


@ensure
async def test_no_autobahn_page_and_no_version_banner(node):
    for path in ("/index.html", "/ws/x", "/statusx?x=1", "/health/"):
        status, headers, body = await _get(node.port, path)
        assert status == 404, (path, status)
        assert "server" not in headers and b"utobahn" not in body, (path, headers, body)
    status, headers, body = await _get(node.port, "/health")  # what answers everyone names no version
    assert status == 200 and "server" not in headers and __version__.encode() not in body, body
    # the operator's pages (allowed networks or the token only) do, on purpose (issue 25): build_info, the
    # status page's node table; still no Server header
    for path in ("/", "/status", "/status.json", "/metrics"):
        status, headers, body = await _get(node.port, path)
        assert status == 200 and "server" not in headers, (path, status)
    # the WAMP path without an upgrade: Autobahn's refusal, not its status page
    status, headers, body = await _get(node.port, "/ws")
    assert status == 426 and "server" not in headers and b"utobahn" not in body, (status, headers, body)
    # and the WebSocket upgrade itself names no server
    upgrade = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n")
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        await threads.deferToThread(s.sendall, f"GET /ws HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n".encode())
        reply = await threads.deferToThread(s.recv, 4096)
    assert reply.startswith(b"HTTP/1.1 101 "), reply
    assert b"\r\nserver:" not in reply.lower(), reply


@ensure
async def test_probes_are_logged_at_debug_only(node):
    levels: list = []

    def observe(event: dict) -> None:
        levels.append((event.get("log_level"), event.get("log_format", "")))

    globalLogPublisher.addObserver(observe)
    try:
        for path in ("/health", "/", "/nothing"):
            await _get(node.port, path)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert [f for lvl, f in levels if lvl is not None and lvl > LogLevel.debug] == [], levels
    assert sum(1 for lvl, f in levels if lvl == LogLevel.debug and f.startswith("HTTP ")) == 3, levels


@ensure
async def test_an_endless_plain_request_is_cut_off_at_the_cap(node):
    junk = "X-Junk: " + "a" * (MAX_HANDSHAKE_SIZE + 1000) + "\r\n"
    status, _, _ = await _get(node.port, "/health", headers=junk)
    assert status == 431
    status, _, _ = await _get(node.port, "/health")
    assert status == 200


class _Probe(protocol.Protocol):
    def __init__(self) -> None:
        self.reply = b""
        self.done: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.reply += data

    def connectionLost(self, reason) -> None:
        self.done.callback(self.reply)


@ensure
async def test_health_answers_503_while_shutting_down():
    node = start_node()
    node.config.shutdown_grace = 0.5
    client = await connect(node.url)  # a session that will not answer GOODBYE at once keeps stop() busy
    probe = _Probe()
    await protocol.ClientCreator(reactor, lambda: probe).connectTCP("127.0.0.1", node.port)
    stopping = node.stop()
    probe.transport.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = await with_timeout(probe.done, 3)
    assert reply.startswith(b"HTTP/1.1 503 "), reply
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["status"] == "stopping"
    await stopping
    del client
