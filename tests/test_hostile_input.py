"""Hostile input (issue 11, points 1 and 3): decoding is bounded for every serializer, a message one
peer cannot be sent is that peer's problem alone, and client data is quoted short in answers and logs.
Every case ends by showing that the router still serves a fresh client."""

from __future__ import annotations

import math
import time

import cbor2
import msgpack
import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.logger import formatEvent

from tests.wampclient import RawSocketPeer, connect, raw_connect, still_serving, with_timeout

ensure = pytest_twisted.ensureDeferred
ROLES = {"caller": {}, "callee": {}, "publisher": {}, "subscriber": {}}


async def _expect_abort(peer, reason: str = "wamp.error.protocol_violation") -> list:
    msg = await peer.recv()
    assert msg[0] == 3 and msg[2] == reason, msg
    assert 0 < len(msg[1]["message"]) < 400, len(msg[1]["message"])  # a short, quoted text
    await with_timeout(peer.closed)
    return msg


def _shared_bomb(levels: int) -> bytes:
    """x = [x, x], `levels` deep, with CBOR's shared references: ~150 bytes that decode to 2^levels leaves."""
    x: list = []
    for _ in range(levels):
        x = [x, x]
    return cbor2.dumps(x, value_sharing=True)


def _nested_json(depth: int, inner: str = "1") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


# -- 1. decoding is bounded by construction ------------------------------------------------------
@ensure
async def test_cbor_shared_reference_bomb_before_hello_is_refused_at_once(node, log_lines):
    frame = _shared_bomb(40)  # 2^40 leaves: today's router never comes back
    assert len(frame) < 400
    peer = await raw_connect(node.url, "cbor")
    t0 = time.monotonic()
    peer.send_raw(frame)
    msg = await _expect_abort(peer)
    assert "expands" in msg[1]["message"], msg
    assert time.monotonic() - t0 < 2.0
    assert max(len(line) for line in log_lines) < 1000
    await still_serving(node)


@ensure
async def test_cbor_shared_references_in_hello_roles_and_in_a_publish(node):
    x: list = []
    for _ in range(30):
        x = [x, x]
    peer = await raw_connect(node.url, "cbor")
    peer.send_raw(cbor2.dumps([1, "realm1", {"roles": {"caller": {"features": {"f": x}}}}], value_sharing=True))
    await _expect_abort(peer)
    # and after WELCOME, in a PUBLISH that a JSON subscriber would get re-encoded
    subscriber = await connect(node.url, "json")
    got = defer.DeferredQueue()
    await subscriber.subscribe(lambda *a, **kw: got.put(a), "com.bomb")
    publisher = await raw_connect(node.url, "cbor")
    assert (await publisher.hello())[0] == 2
    publisher.send_raw(cbor2.dumps([16, 1, {"acknowledge": True}, "com.bomb", [x]], value_sharing=True))
    await _expect_abort(publisher)
    assert not got.pending
    await still_serving(node)


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
@ensure
async def test_deep_json_gets_abort_not_a_traceback(node, depth):
    peer = await raw_connect(node.url, "json")
    peer.send_raw(_nested_json(depth), binary=False)
    await _expect_abort(peer)
    # the same depth inside HELLO roles, and inside a CALL's arguments after WELCOME
    peer = await raw_connect(node.url, "json")
    inner = '{"caller": {"features": ' + "[" * depth + "]" * depth + "}}"
    peer.send_raw(f'[1, "realm1", {{"roles": {inner}}}]'.encode(), binary=False)
    await _expect_abort(peer)
    peer = await raw_connect(node.url, "json")
    await peer.hello()
    peer.send_raw(b'[48, 1, {}, "com.x", [' + _nested_json(depth) + b"]]", binary=False)
    await _expect_abort(peer)
    await still_serving(node)


@ensure
async def test_deep_msgpack_gets_abort(node):
    x: list = [1]
    for _ in range(200):
        x = [x]
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    peer.send([16, 1, {}, "com.x", [x]])
    await _expect_abort(peer)
    await still_serving(node, "msgpack")


@ensure
async def test_nesting_within_the_configured_depth_is_routed(make_node):
    node = make_node(listeners=[{"max_depth": 8}])
    caller = await connect(node.url, "msgpack")
    await caller.register(lambda v: v, "com.echo")
    assert await caller.call("com.echo", [[[[1]]]]) == [[[[1]]]]  # depth 8 with the CALL and its args list
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    peer.send([48, 1, {}, "com.echo", [[[[[[[[1]]]]]]]]])
    await _expect_abort(peer)


@pytest.mark.parametrize("serializer,frame", [
    ("json", b'[16, 1, {}, "com.x", [NaN]]'),
    ("json", b'[16, 1, {}, "com.x", [Infinity]]'),
    ("json", b'[16, 1, {}, "com.x", ["\\ud800"]]'),  # a lone surrogate: no serializer can write it
    ("json", b'[16, 1, {}, "com.x", ["\\u0000\\u0000!"]]'),  # binary by the convention, but not base64
    ("msgpack", msgpack.packb([16, 1, {}, "com.x", [msgpack.ExtType(5, b"x")]])),
    ("msgpack", msgpack.packb([16, 1, {}, "com.x", [], {b"k": 1}], use_bin_type=True)),
    ("cbor", cbor2.dumps([16, 1, {}, "com.x", [cbor2.CBORTag(4242, "x")]])),
    ("cbor", cbor2.dumps([16, 1, {}, "com.x", [], {1: "int key"}])),
])
@ensure
async def test_values_outside_wamps_data_model_get_abort(node, serializer, frame):
    peer = await raw_connect(node.url, serializer)
    await peer.hello()
    peer.send_raw(frame, binary=serializer != "json")
    await _expect_abort(peer)
    await still_serving(node)


@ensure
async def test_abort_text_and_log_quote_a_short_prefix_of_client_data(node, log_lines):
    peer = await raw_connect(node.url, "json")
    peer.send([["x" * 500_000]])  # a "message type" half a megabyte long
    msg = await _expect_abort(peer)
    assert "xxx" in msg[1]["message"]
    peer = await raw_connect(node.url, "json")
    await peer.hello()
    peer.send([48, 1, {}, "com." + "y" * 500_000])  # a URI far over limits.max_uri_length, named at length
    err = await peer.recv()
    assert err[0] == 8 and err[4] == "wamp.error.invalid_uri" and len(err[5][0]) < 400, len(str(err))
    assert max(len(line) for line in log_lines) < 1000


@ensure
async def test_a_newline_in_hello_agent_cannot_forge_a_log_line(node, log_lines):
    peer = await raw_connect(node.url, "json")
    peer.send([1, "realm1", {"roles": ROLES, "agent": "evil\n2026-01-01T00:00:00 [router] FORGED" + "z" * 10_000}])
    welcome = await peer.recv()
    assert welcome[0] == 2
    joined = [line for line in log_lines if f"session {welcome[1]} joined" in line]
    assert joined and "\n" not in joined[0] and "evil\\n2026" in joined[0] and len(joined[0]) < 1000, joined
    assert len(node.table.fetch(welcome[1]).agent) <= 256


# -- 3. a message one peer cannot be sent is that peer's problem alone ---------------------------
@ensure
async def test_an_event_one_serializer_cannot_carry_reaches_every_other_subscriber(node):
    queues = {}
    for ser in ("json", "msgpack", "cbor"):
        client = await connect(node.url, ser)
        queues[ser] = defer.DeferredQueue()
        await client.subscribe(lambda *a, q=queues[ser], **kw: q.put(a), "com.big")
    publisher = await raw_connect(node.url, "json")
    await publisher.hello()
    publisher.send([16, 7, {"acknowledge": True}, "com.big", [2**64 + 1]])  # msgpack stops at 2^64 - 1
    assert (await publisher.recv())[:2] == [17, 7]  # PUBLISHED
    assert await with_timeout(queues["json"].get()) == (2**64 + 1,)
    assert await with_timeout(queues["cbor"].get()) == (2**64 + 1,)
    publisher.send([16, 8, {"acknowledge": True}, "com.big", ["next"]])
    assert (await publisher.recv())[:2] == [17, 8]
    assert await with_timeout(queues["msgpack"].get()) == ("next",)  # it missed only the one it cannot read
    await still_serving(node)


@ensure
async def test_nan_never_reaches_a_json_peer_as_invalid_json(node):
    json_sub = await raw_connect(node.url, "json")  # its decode refuses NaN: the test fails if one arrives
    await json_sub.hello()
    json_sub.send([32, 1, {}, "com.nan"])
    assert (await json_sub.recv())[0] == 33
    msgpack_sub = await connect(node.url, "msgpack")
    got = defer.DeferredQueue()
    await msgpack_sub.subscribe(lambda *a, **kw: got.put(a), "com.nan")
    publisher = await connect(node.url, "msgpack")
    await publisher.publish("com.nan", float("nan"), options=PublishOptions(acknowledge=True))
    assert math.isnan((await with_timeout(got.get()))[0])
    await publisher.publish("com.nan", 1.5, options=PublishOptions(acknowledge=True))
    event = await json_sub.recv()
    assert event[0] == 36 and event[4] == [1.5], event


@ensure
async def test_a_call_the_callee_cannot_be_sent_fails_for_the_caller_and_frees_the_slot(make_node):
    node = make_node(limits={"max_pending_calls": 1})
    callee = await connect(node.url, "msgpack")
    await callee.register(lambda v: v, "com.echo")
    caller = await raw_connect(node.url, "json")
    await caller.hello()
    for request in (1, 2, 3):  # with the slot leaked, the 2nd and 3rd would get "too many calls pending"
        caller.send([48, request, {}, "com.echo", [2**64]])
        err = await caller.recv()
        assert err[:3] == [8, 48, request] and err[4] == "wamp.error.invalid_argument", err
    caller.send([48, 4, {}, "com.echo", [5]])
    assert await caller.recv() == [50, 4, {}, [5]]
    # and a result the caller cannot take: the caller gets an ERROR, not silence
    other = await raw_connect(node.url, "msgpack")
    await other.hello()
    other.send([64, 1, {}, "com.nan"])
    reg = await other.recv()
    caller.send([48, 5, {}, "com.nan", []])
    inv = await other.recv()
    other.send([70, inv[1], {}, [float("inf")]])
    err = await caller.recv()
    assert err[:3] == [8, 48, 5] and err[4] == "wamp.error.invalid_argument", err
    assert reg[0] == 65


@ensure
async def test_an_answer_larger_than_the_callers_limit_gets_payload_size_exceeded(make_node):
    node = make_node(listeners=[{"max_message_size": 2048}, {"port": 0}])
    big_url = f"ws://127.0.0.1:{node.ports[1].getHost().port}/ws"
    callee = await connect(big_url, "json")
    await callee.register(lambda: "r" * 10_000, "com.big")
    for i in range(200):  # ids of 16 digits: ~3.5 KB of wamp.subscription.list
        await callee.subscribe(lambda: None, f"com.example.topic.number.{i}")
    caller = await raw_connect(node.url, "json")
    await caller.hello()
    caller.send([48, 1, {}, "com.big", []])
    err = await caller.recv()
    assert err[:3] == [8, 48, 1] and err[4] == "wamp.error.payload_size_exceeded", err
    caller.send([48, 2, {}, "wamp.subscription.list", []])  # a meta answer over the limit: no silence either
    err = await caller.recv()
    assert err[:3] == [8, 48, 2] and err[4] == "wamp.error.payload_size_exceeded", err
    caller.send([48, 3, {}, "wamp.session.count", []])
    assert (await caller.recv())[:2] == [50, 3]


@ensure
async def test_kill_all_reaches_every_session_when_one_goodbye_cannot_carry_its_message(make_node):
    node = make_node(listeners=[{"max_message_size": 1024}, {"port": 0}])
    victims = [await raw_connect(node.url, "json") for _ in range(3)]
    for v in victims:
        assert (await v.hello())[0] == 2
    killer = await connect(f"ws://127.0.0.1:{node.ports[1].getHost().port}/ws", "json")
    killed = await killer.call("wamp.session.kill_all", message="m" * 4000, reason="com.example.bye")
    assert killed == 3
    for v in victims:
        goodbye = await v.recv()
        assert goodbye[0] == 6 and goodbye[2] == "com.example.bye", goodbye
    assert node.table.size() == 1


# -- RawSocket peers that take small messages -----------------------------------------------------
@ensure
async def test_a_rawsocket_client_taking_512_bytes_gets_its_welcome(make_node):
    node = make_node(listeners=[{"type": "rawsocket"}])
    # exponent 0: 2^9 = 512 bytes; HELLO goes out at once, before the router's handshake answer
    peer = await with_timeout(endpoints.connectProtocol(
        endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", node.port), RawSocketPeer("json", exponent=0)))
    peer.send([1, "realm1", {"roles": {"caller": {}}, "agent": "tiny"}])
    welcome = await peer.recv()
    assert welcome[0] == 2 and welcome[2]["realm"] == "realm1", welcome
    peer.send([48, 1, {}, "wamp.session.count", []])
    assert (await peer.recv())[:2] == [50, 1]
    peer.transport.loseConnection()


# -- loops that must survive one session's trouble ------------------------------------------------
async def _mortal_with_testament(node, n: int):
    """A raw JSON session whose testament holds an integer msgpack cannot carry."""
    peer = await raw_connect(node.url, "json")
    await peer.hello()
    peer.send([48, 1, {}, "wamp.session.add_testament", ["com.will", [2**64 + n], {}]])
    assert (await peer.recv())[:2] == [50, 1]
    return peer


async def _will_subscribers(node):
    queues = {}
    for ser in ("json", "msgpack"):
        client = await connect(node.url, ser)
        queues[ser] = defer.DeferredQueue()
        await client.subscribe(lambda *a, q=queues[ser], **kw: q.put(a), "com.will")
        node.table.update(client.welcome.session, expires_in=None)  # the witnesses outlive the mortals
    return queues


@ensure
async def test_the_sweep_survives_a_testament_one_subscriber_cannot_take(make_node):
    node = make_node(node={"sweep_interval": 0.05}, realms=[{"uri": "realm1", "limits": {"expires_in": 1.0}}])
    queues = await _will_subscribers(node)
    mortals = [await _mortal_with_testament(node, n) for n in range(2)]
    for peer in mortals:  # both expire: the first one's testament must not stop the sweep for good
        goodbye = await peer.recv(5)
        assert goodbye[0] == 6 and goodbye[2] == "courtyard.close.session_expired", goodbye
    wills = sorted([(await with_timeout(queues["json"].get()))[0] for _ in mortals])
    assert wills == [2**64, 2**64 + 1]
    assert not queues["msgpack"].pending
    assert node.table.size() == 2


@ensure
async def test_shutdown_says_goodbye_to_everyone_past_one_sessions_trouble():
    from tests.helpers.nodes import start_node

    node = start_node()
    await _will_subscribers(node)
    mortals = [await _mortal_with_testament(node, n) for n in range(3)]
    node.config.shutdown_grace = 0.2
    await node.stop()
    for peer in mortals:
        goodbye = await peer.recv()
        assert goodbye[0] == 6 and goodbye[2] == "wamp.close.system_shutdown", goodbye
    assert node.table.size() == 0


@ensure
async def test_websocket_pings_from_a_peer_that_never_reads_cannot_queue_pongs(make_node):
    budget = 64 * 1024
    node = make_node(listeners=[{"max_outgoing_buffer": budget}])
    peer = await raw_connect(node.url, "json")
    welcome = await peer.hello()
    conn = node.table.fetch(welcome[1]).transport.wire
    peer.proto.transport.pauseProducing()  # it stops reading; its PONGs back up
    for _ in range(60):  # 60 x 1,000 PINGs of 125 bytes: 7.5 MB of PONGs if all were queued
        for _ in range(1000):
            peer.proto.sendPing(b"p" * 125)
        await sleep(0.005)
    t = conn.transport
    assert len(t.dataBuffer) + t._tempDataLen <= 64 * 1024 + budget + 64 * 1024
    assert conn.dropped_events > 0
    peer.proto.transport.resumeProducing()
    await still_serving(node)


@pytest.mark.parametrize("request_bytes", [
    b"\x16\x03\x01\x1b[31mEVIL\x08\x07 / HTTP/1.1\r\nHost: x\r\n\r\n",  # a TLS hello or a terminal escape
    b"GET /" + b"a" * 3000 + b"\x1b[2J HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: " + b"x\x1b[1m" * 1000 + b"\r\n\r\n",
])
@ensure
async def test_a_bad_opening_handshake_is_logged_short_and_escaped(node, log_lines, request_bytes):
    class Probe(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(request_bytes)

        def connectionLost(self, reason):
            done.callback(None)

    done = defer.Deferred()
    await with_timeout(endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", node.port),
                                                 Probe()))
    await with_timeout(done)
    assert log_lines
    for line in log_lines:
        assert len(line) < 600 and not any(ord(c) < 32 or ord(c) == 127 for c in line), repr(line[:300])
    await still_serving(node)


@ensure
async def test_a_hello_without_agent_logs_no_python_none(node, log_lines):
    peer = await raw_connect(node.url, "json")
    welcome = await peer.hello()  # no agent in HELLO.Details
    joined = [line for line in log_lines if f"session {welcome[1]} joined" in line]
    assert joined and "None" not in joined[0] and "(no agent)" in joined[0], joined


@ensure
async def test_a_failed_login_is_one_warning_naming_realm_authid_method_and_address(make_node):
    from twisted.logger import LogLevel, globalLogPublisher

    from realms.secrets import hash_secret
    from tests.wampclient import Aborted, answer_ticket

    warnings: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_level") == LogLevel.warn:
            warnings.append(formatEvent(event))

    node = make_node(realms=[{"uri": "shop", "auth": {"anonymous": False, "ticket": True},
                              "users": {"bob": {"role": "customer", "ticket": hash_secret("pw", iterations=1000)}},
                              "roles": {"customer": {"permissions": []}}}])
    globalLogPublisher.addObserver(observe)
    try:
        with pytest.raises(Aborted):
            await connect(node.url, realm="shop", authmethods=["ticket"], authid="bob\nFORGED",
                          on_challenge=answer_ticket("wrong"))
    finally:
        globalLogPublisher.removeObserver(observe)
    lines = [line for line in warnings if "refused" in line and "shop" in line]
    assert len(lines) == 1, warnings
    assert "ticket" in lines[0] and "127.0.0.1" in lines[0] and "bob\\nFORGED" in lines[0], lines[0]
