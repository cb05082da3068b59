"""Bad input gets the spec's ABORT or ERROR, one log line, and the router keeps serving everyone
(issue 2, points 3 and 4). Every case ends by showing a fresh client is served."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor

from tests.wampclient import connect, raw_callee_and_caller, raw_connect, still_serving, with_timeout

ensure = pytest_twisted.ensureDeferred


async def _expect_abort(peer, reason: str):
    msg = await peer.recv()
    assert msg[0] == 3, msg
    assert msg[2] == reason, msg
    assert msg[1].get("message")
    await with_timeout(peer.closed)
    return msg


@ensure
async def test_garbage_frame_aborts(node, serializer):
    bystander = await connect(node.url, serializer)
    peer = await raw_connect(node.url, serializer)
    peer.send_raw(b"\xc1\xff not json nor msgpack {[", binary=serializer == "msgpack")
    await _expect_abort(peer, "wamp.error.protocol_violation")
    assert bystander.is_attached()
    await still_serving(node, serializer)


@pytest.mark.parametrize("msg", [
    [48, 1, {}, "com.example.call"],  # CALL before HELLO
    [32, 1, {}, "com.example.topic"],  # SUBSCRIBE before HELLO
    [6, {}, "wamp.close.normal"],  # GOODBYE before HELLO
])
@ensure
async def test_message_before_hello_aborts(node, serializer, msg):
    peer = await raw_connect(node.url, serializer)
    peer.send(msg)
    await _expect_abort(peer, "wamp.error.protocol_violation")
    await still_serving(node, serializer)


@ensure
async def test_second_hello_aborts_and_frees_the_session(node, serializer):
    peer = await raw_connect(node.url, serializer)
    assert (await peer.hello())[0] == 2
    assert node.table.size() == 1
    peer.send([1, "realm1", {"roles": {"caller": {}}}])
    await _expect_abort(peer, "wamp.error.protocol_violation")
    assert node.table.size() == 0
    await still_serving(node, serializer)


@pytest.mark.parametrize("msg", [
    "not a list",
    [],
    ["48", 1, {}, "x"],  # code not an integer
    [2, 1, {}],  # WELCOME is the router's to send
    [36, 1, 2, {}],  # so is EVENT
    [999, 1],  # no such message
    [48, 1, {}],  # CALL missing its procedure
    [48, 1, [], "com.example.p"],  # options not a dict
    [48, -1, {}, "com.example.p"],  # request id out of range
    [48, 2**53 + 1, {}, "com.example.p"],  # request id out of range
    [48, 1, {}, "com.example.p", {}, {}],  # args not a list
    [48, 1, {}, "com.example.p", [], {}, "extra"],  # too many fields
    [16, 1, {}, 42],  # topic not a string
    [8, 48, 1, {}, "com.example.error"],  # ERROR for a request type the client may not answer
])
@ensure
async def test_malformed_message_after_welcome_aborts(node, serializer, msg):
    peer = await raw_connect(node.url, serializer)
    await peer.hello()
    peer.send(msg)
    await _expect_abort(peer, "wamp.error.protocol_violation")
    assert node.table.size() == 0
    await still_serving(node, serializer)


@ensure
async def test_oversize_message_gets_payload_size_exceeded(make_node):
    node = make_node(listeners=[{"max_message_size": 4096}])
    peer = await raw_connect(node.url)
    await peer.hello()
    peer.send([48, 1, {}, "com.example.big", ["x" * 10_000]])
    await _expect_abort(peer, "wamp.error.payload_size_exceeded")
    assert node.table.size() == 0
    # a message just under the limit is fine
    client = await connect(node.url)
    await client.register(lambda s: len(s), "com.example.len")
    assert await client.call("com.example.len", "y" * 3000) == 3000


@ensure
async def test_each_listener_keeps_its_own_websocket_settings(make_node):
    # Autobahn's settings live on a protocol class per listener: one listener's must not leak to another.
    node = make_node(listeners=[{"max_message_size": 4096}, {"max_message_size": 65536}])
    small = f"ws://127.0.0.1:{node.ports[0].getHost().port}/ws"
    large = f"ws://127.0.0.1:{node.ports[1].getHost().port}/ws"
    client = await connect(large)
    await client.register(lambda s: len(s), "com.example.len")
    assert await client.call("com.example.len", "y" * 10_000) == 10_000
    peer = await raw_connect(small)
    await peer.hello()
    peer.send([48, 1, {}, "com.example.len", ["x" * 10_000]])
    await _expect_abort(peer, "wamp.error.payload_size_exceeded")


@ensure
async def test_duplicate_call_request_id_in_flight_aborts(node):
    callee, caller, reg_id = await raw_callee_and_caller(node.url, "com.example.p")
    caller.send([48, 5, {}, "com.example.p"])
    await callee.recv()
    caller.send([48, 5, {}, "com.example.p"])
    await _expect_abort(caller, "wamp.error.protocol_violation")


class _HttpProbe(protocol.Protocol):
    def connectionMade(self):
        self.buf = b""
        self.transport.write(self.factory.request)

    def dataReceived(self, data):
        self.buf += data

    def connectionLost(self, reason):
        self.factory.done.callback(self.buf)


async def _http_upgrade(node, path: str, protocols: str | None) -> bytes:
    f = protocol.ClientFactory()
    f.protocol = _HttpProbe
    f.done = defer.Deferred()
    headers = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{node.port}", "Upgrade: websocket",
               "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        headers.append(f"Sec-WebSocket-Protocol: {protocols}")
    f.request = ("\r\n".join(headers) + "\r\n\r\n").encode()
    reactor.connectTCP("127.0.0.1", node.port, f)
    return await with_timeout(f.done)


@pytest.mark.parametrize("protocols", [None, "wamp.2.cbor.batched", "chat, superchat"])
@ensure
async def test_handshake_without_a_supported_subprotocol_is_refused(node, protocols):
    reply = await _http_upgrade(node, "/ws", protocols)
    status = reply.split(b"\r\n", 1)[0]
    assert b" 400 " in status, status
    assert b"wamp.2.json" in reply  # the refusal says what the router speaks
    await still_serving(node)


@ensure
async def test_handshake_on_another_path_is_refused(node):
    reply = await _http_upgrade(node, "/elsewhere", "wamp.2.json")
    assert b" 404 " in reply.split(b"\r\n", 1)[0]


@ensure
async def test_connection_without_hello_is_closed(make_node):
    node = make_node(listeners=[{"hello_timeout": 1.0}])
    peer = await raw_connect(node.url)
    await with_timeout(peer.closed, 3)
    await still_serving(node)
