"""RawSocket (TCP) and CBOR, with Autobahn's own clients (issue 7, transports and serializers)."""

from __future__ import annotations

import socket
import struct

import cbor2
import msgpack
import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, threads

from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def both(make_node):
    """A node with a WebSocket and a RawSocket listener; .rs is the RawSocket url."""
    node = make_node(listeners=[{}, {"type": "rawsocket", "max_message_size": 65536}])
    node.rs = f"rs://127.0.0.1:{node.ports[1].getHost().port}"
    node.rs_port = node.ports[1].getHost().port
    return node


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
@ensure
async def test_rawsocket_call_and_publish(both, serializer):
    callee = await connect(both.rs, serializer)
    caller = await connect(both.rs, serializer)
    await callee.register(lambda x, k=None: [x, k], "com.rs.echo")
    assert await caller.call("com.rs.echo", b"\x00bin", k="v") == [b"\x00bin", "v"]
    got = defer.DeferredQueue()
    await callee.subscribe(lambda *a: got.put(list(a)), "com.rs.topic")
    await caller.publish("com.rs.topic", 1, "two", options=PublishOptions(acknowledge=True))
    assert await with_timeout(got.get()) == [1, "two"]


@ensure
async def test_cbor_over_websocket_and_events_across_transports(both):
    ws_cbor = await connect(both.url, "cbor")
    ws_json = await connect(both.url, "json")
    rs_msgpack = await connect(both.rs, "msgpack")
    queues = []
    for c in (ws_json, rs_msgpack):
        q = defer.DeferredQueue()
        await c.subscribe(lambda *a, q=q: q.put(list(a)), "com.mixed")
        queues.append(q)
    await ws_cbor.register(lambda: "cbor!", "com.cbor.proc")
    assert await rs_msgpack.call("com.cbor.proc") == "cbor!"
    await ws_cbor.publish("com.mixed", {"n": 1}, options=PublishOptions(acknowledge=True))
    for q in queues:
        assert await with_timeout(q.get()) == [{"n": 1}]


def _raw_tcp(port: int, handshake: bytes, then: bytes = b"", read: int = 4, timeout: float = 3.0) -> bytes:
    """A blocking RawSocket peer for the byte-level paths (run in a thread, off the reactor)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(handshake)
        reply = s.recv(4)
        if then:
            s.sendall(then)
        data = b""
        try:
            while len(data) < read:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        return reply + data


@ensure
async def test_rawsocket_handshake_announces_the_limit_and_refuses_unknown_serializers(both):
    reply = await threads.deferToThread(_raw_tcp, both.rs_port, bytes((0x7F, 0xF2, 0, 0)), read=0)
    assert reply[0] == 0x7F and reply[1] & 0x0F == 2
    assert 2 ** (9 + (reply[1] >> 4)) == 65536  # the configured max_message_size
    refused = await threads.deferToThread(_raw_tcp, both.rs_port, bytes((0x7F, 0xF7, 0, 0)), read=0)
    assert refused == bytes((0x7F, 0x10, 0, 0))  # error 1: serializer unsupported
    reserved = await threads.deferToThread(_raw_tcp, both.rs_port, bytes((0x7F, 0xF1, 1, 0)), read=0)
    assert reserved == bytes((0x7F, 0x30, 0, 0))  # error 3: reserved bits


@ensure
async def test_rawsocket_ping_pong_and_a_wamp_session(both):
    hello = msgpack.packb([1, "realm1", {"roles": {"caller": {}}}])
    frames = bytes((1, 0, 0, 3)) + b"abc" + struct.pack(">I", len(hello)) + hello
    data = await threads.deferToThread(_raw_tcp, both.rs_port, bytes((0x7F, 0xF2, 0, 0)), frames, read=8 + 10)
    body = data[4:]
    assert body[:7] == bytes((2, 0, 0, 3)) + b"abc"  # PONG echoes the PING payload
    length = struct.unpack(">I", body[7:11])[0]
    welcome = msgpack.unpackb(body[11:11 + length])
    assert welcome[0] == 2


@ensure
async def test_rawsocket_oversize_message_gets_abort(both):
    big = cbor2.dumps([48, 1, {}, "com.x", ["y" * 70_000]])
    hello = cbor2.dumps([1, "realm1", {"roles": {"caller": {}}}])
    frames = struct.pack(">I", len(hello)) + hello + struct.pack(">I", len(big)) + big[:1000]
    data = await threads.deferToThread(_raw_tcp, both.rs_port, bytes((0x7F, 0xF3, 0, 0)), frames, read=400)
    msgs, rest = [], data[4:]
    while len(rest) >= 4:
        n = struct.unpack(">I", rest[:4])[0]
        msgs.append(cbor2.loads(rest[4:4 + n]))
        rest = rest[4 + n:]
    assert [m[0] for m in msgs] == [2, 3]
    assert msgs[1][2] == "wamp.error.payload_size_exceeded"
    await sleep(0.05)
    assert both.table.size() == 0
    client = await connect(both.rs, "cbor")  # and the listener still serves
    assert client.is_attached()


@ensure
async def test_rawsocket_garbage_before_handshake_is_closed(both):
    data = await threads.deferToThread(_raw_tcp, both.rs_port, b"GET / HTTP/1.1\r\n\r\n", read=0)
    assert data == b""
    client = await connect(both.rs, "json")
    assert client.is_attached()
