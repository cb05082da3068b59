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
from tests.wampclient import Aborted, connect, raw_connect, with_timeout

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
