"""Connections without a session are bounded, over real sockets (issue 11, item 6): a GOODBYE'd
connection gets hello_timeout for a new HELLO, the opening HTTP handshake is capped in size and time,
and the admin realm has a reserve of sessions beyond max_sessions."""

from __future__ import annotations

import socket
import struct
import time

import msgpack
import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from twisted.internet import threads

from realms.secrets import hash_secret
from router.transport.websocket import MAX_HANDSHAKE_SIZE
from tests.helpers.poll import until
from tests.wampclient import Aborted, connect, raw_connect, recv_until_closed, with_timeout

ensure = pytest_twisted.ensureDeferred
ADMIN = {"users": {"root": {"ticket": hash_secret("root-pw", iterations=1000)}}}


# -- 6a: after a client GOODBYE the connection waits hello_timeout for a new HELLO -----------------
@ensure
async def test_goodbyed_websocket_is_closed_after_hello_timeout(make_node, serializer):
    node = make_node(listeners=[{"hello_timeout": 1.0}])
    peer = await raw_connect(node.url, serializer)
    assert (await peer.hello())[0] == 2
    peer.send([6, {}, "wamp.close.normal"])
    assert await peer.recv() == [6, {}, "wamp.close.goodbye_and_out"]
    assert node.table.size() == 0
    t0 = time.monotonic()
    await with_timeout(peer.closed, 4)
    assert 0.8 < time.monotonic() - t0 < 4


@ensure
async def test_a_new_hello_within_the_grace_keeps_the_connection(make_node):
    node = make_node(listeners=[{"hello_timeout": 1.0}])
    peer = await raw_connect(node.url)
    assert (await peer.hello())[0] == 2
    peer.send([6, {}, "wamp.close.normal"])
    assert (await peer.recv())[0] == 6
    await sleep(0.5)
    assert (await peer.hello())[0] == 2  # within the grace: a new session
    await sleep(1.5)  # past the grace: the new session's connection stays
    assert not peer.closed.called and node.table.size() == 1
    peer.send([48, 1, {}, "com.example.none"])
    assert (await peer.recv())[4] == "wamp.error.no_such_procedure"


def _rawsocket_goodbye(port: int) -> tuple[list, float]:
    """A RawSocket peer that joins, says GOODBYE and then just waits: what it got, and how long the
    router kept the connection open after the GOODBYE."""
    def frame(msg) -> bytes:
        body = msgpack.packb(msg)
        return struct.pack(">I", len(body)) + body

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(bytes((0x7F, 0xF2, 0, 0)) + frame([1, "realm1", {"roles": {"caller": {}}}]))
        data = b""
        while len(data) < 8:
            data += s.recv(65536)
        s.sendall(frame([6, {}, "wamp.close.normal"]))
        t0 = time.monotonic()
        while chunk := s.recv(65536):  # until the router closes (or the 5 s socket timeout raises)
            data += chunk
        waited = time.monotonic() - t0
    msgs, rest = [], data[4:]
    while len(rest) >= 4:
        n = struct.unpack(">I", rest[:4])[0]
        msgs.append(msgpack.unpackb(rest[4:4 + n]))
        rest = rest[4 + n:]
    return msgs, waited


@ensure
async def test_goodbyed_rawsocket_is_closed_after_hello_timeout(make_node):
    node = make_node(listeners=[{"type": "rawsocket", "hello_timeout": 1.0}])
    msgs, waited = await threads.deferToThread(_rawsocket_goodbye, node.port)
    assert [m[0] for m in msgs] == [2, 6]
    assert 0.8 < waited < 4


# -- 6b: the opening handshake is capped in size and time ---------------------------------------
def _upgrade_request(port: int, extra: str = "") -> bytes:
    return (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: wamp.2.json\r\n{extra}\r\n").encode()


def _endless_headers(port: int, total: int) -> tuple[int, bytes]:
    """Send up to `total` bytes of one opening request that never ends; how many the router took
    before it closed, and what it answered."""
    line = b"X-Junk: " + b"a" * 1000 + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(_upgrade_request(port)[:-2])
        try:
            while sent < total:
                sent += s.send(line * 64)
        except OSError:  # reset by the router
            pass
        reply = recv_until_closed(s)
    return sent, reply


@ensure
async def test_endless_opening_request_is_cut_off_at_the_cap(make_node):
    node = make_node(listeners=[{"hello_timeout": 5.0}])
    sent, reply = await threads.deferToThread(_endless_headers, node.port, 64 * 1024 * 1024)
    # The router stops reading at the cap and closes: the kernel's buffers take a few MB at most.
    assert sent < 16 * 1024 * 1024, sent
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431 "), reply[:100]
    await connect(node.url)  # and the listener still serves


def _piecewise_upgrade(port: int, request: bytes, cuts: list[int]) -> bytes:
    """Send an opening request in pieces, with pauses between them; the router's answer's first line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for a, b in zip([0, *cuts], [*cuts, len(request)], strict=True):
            s.sendall(request[a:b])
            time.sleep(0.05)
        reply = b""
        while b"\r\n" not in reply and (chunk := s.recv(65536)):
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


@ensure
async def test_opening_request_in_pieces_up_to_the_cap_is_accepted(node):
    big = "X-Big: " + "b" * (MAX_HANDSHAKE_SIZE - 1000) + "\r\n"
    request = _upgrade_request(node.port, big)
    assert len(request) <= MAX_HANDSHAKE_SIZE
    n = len(request)
    # in pieces of every size, the end of the header split between two of them
    status = await threads.deferToThread(_piecewise_upgrade, node.port, request, [5, 100, 30_000, n - 3, n - 1])
    assert status.startswith(b"HTTP/1.1 101 "), status
    over = _upgrade_request(node.port, "X-Big: " + "b" * MAX_HANDSHAKE_SIZE + "\r\n")
    status = await threads.deferToThread(_piecewise_upgrade, node.port, over, [5, 100, 30_000])
    assert status.startswith(b"HTTP/1.1 431 "), status


def _trickle(port: int, data: bytes, every: float, limit: float) -> float:
    """Send one byte every `every` seconds until the router closes; how long that took."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(every)
        for i in range(int(limit / every)):
            try:
                s.send(data[i % len(data):i % len(data) + 1])
                if s.recv(65536) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
    return time.monotonic() - t0


@ensure
async def test_trickling_opening_request_is_closed_by_hello_timeout(make_node):
    node = make_node(listeners=[{"hello_timeout": 1.0}])
    took = await threads.deferToThread(_trickle, node.port, _upgrade_request(node.port), 0.05, 6.0)
    assert took < 4, took  # Autobahn's opening-handshake timer ticks in whole seconds
    await connect(node.url)


@ensure
async def test_rawsocket_handshake_and_hello_are_timed(make_node):
    node = make_node(listeners=[{"type": "rawsocket", "hello_timeout": 1.0}])
    took = await threads.deferToThread(_trickle, node.port, b"\x7f", 0.3, 6.0)  # never 4 octets
    assert took < 3, took
    # a complete handshake, then a frame that never completes: the HELLO timer closes it
    took = await threads.deferToThread(_trickle, node.port, bytes((0x7F, 0xF2, 0, 0, 0, 0, 1, 0)) + b"\0" * 300,
                                       0.3, 6.0)
    assert took < 3, took


# -- connections without a session are bounded in number ------------------------------------------
def _first_bytes(port: int, send: bytes = b"") -> bytes:
    """Connect, send, and read until the router closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if send:
            s.sendall(send)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply


@ensure
async def test_connections_without_a_session_are_bounded(make_node):
    node = make_node(listeners=[{}, {"type": "rawsocket"}], limits={"max_pending_connections": 3})
    rs_port = node.ports[1].getHost().port
    joined = [await connect(node.url) for _ in range(3)]  # sessions do not count
    idle = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(2)]
    idle.append(socket.create_connection(("127.0.0.1", rs_port)))
    try:
        await until(lambda: node.connections == 6)
        reply = await threads.deferToThread(_first_bytes, node.port, _upgrade_request(node.port))
        assert reply.startswith(b"HTTP/1.1 503 "), reply[:100]
        reply = await threads.deferToThread(_first_bytes, rs_port, bytes((0x7F, 0xF2, 0, 0)))
        assert reply == bytes((0x7F, 0x40, 0, 0))  # RawSocket error 4: maximum connection count reached
        assert all(c.is_attached() for c in joined)
    finally:
        for s in idle:
            s.close()
    await until(lambda: node.connections == 3)
    assert (await connect(node.url)).is_attached()  # room again
    assert (await connect(f"rs://127.0.0.1:{rs_port}")).is_attached()


# -- 6c: the admin realm's reserve beyond max_sessions ---------------------------------------------
@ensure
async def test_admin_realm_has_a_reserve_beyond_max_sessions(make_node):
    node = make_node(admin=dict(ADMIN), limits={"max_sessions": 2, "admin_reserve": 1})
    await connect(node.url)
    await connect(node.url)
    with pytest.raises(Aborted) as e:
        await connect(node.url)
    assert e.value.reason == "courtyard.error.too_many_sessions"
    admin = await connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                          on_challenge=lambda c: "root-pw")
    assert await admin.call("courtyard.session.count", realm="realm1") == 2
    with pytest.raises(Aborted) as e:  # the reserve is spent
        await connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                      on_challenge=lambda c: "root-pw")
    assert e.value.reason == "courtyard.error.too_many_sessions"
    with pytest.raises(Aborted) as e:  # and realm1 still stops at max_sessions
        await connect(node.url)
    assert e.value.reason == "courtyard.error.too_many_sessions"


@ensure
async def test_an_admin_session_on_the_reserve_holds_no_ordinary_slot(make_node):
    """Issue 23, item 6: the admin session admitted while the table was full stays on the reserve, so
    after every ordinary session left, max_sessions ordinary sessions get in again (not one fewer)."""
    node = make_node(admin=dict(ADMIN), limits={"max_sessions": 5, "admin_reserve": 2})
    first = [await connect(node.url) for _ in range(5)]
    admin = await connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                          on_challenge=lambda c: "root-pw")
    for c in first:
        c.leave()
        await with_timeout(c.left)
    again = [await connect(node.url) for _ in range(5)]  # on main the fifth was refused
    with pytest.raises(Aborted) as e:
        await connect(node.url)
    assert e.value.reason == "courtyard.error.too_many_sessions"
    assert await admin.call("courtyard.session.count", realm="realm1") == 5
    for c in [*again, admin]:
        c.leave()
