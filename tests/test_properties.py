"""Property-based tests (Hypothesis) of decode → validate → route → encode, for every serializer pair.

Over real sockets: publishers and callers on each serializer and transport send generated payloads
(nested str/int/float/bool/None/bytes/list/dict with the edges: ints near ±2^53, ±2^63, 2^64 and beyond,
NaN and ±Infinity, lone surrogates, NUL characters, strings starting with NUL, non-str dict keys, deep
nesting) to subscribers and callees on every serializer and transport. The property, per example:

- the publisher (caller) gets an answer in time: PUBLISHED (RESULT), or ERROR / ABORT with a
  `wamp.*` / `courtyard.*` URI — never silence, never a logged traceback;
- whatever a peer receives decodes strictly (no NaN in JSON, no invalid UTF-8) and equals what was
  sent, modulo the documented conversions (JSON's NUL-base64 binary convention, tuples → lists);
- a subscriber whose serializer can carry the payload gets it whenever the publisher got PUBLISHED
  (one bad peer must not cost the others their event);
- after each example a control publish reaches every subscriber and a control call every callee
  (the router and every peer's pending-call slots are still alive; max_pending_calls is small here).

A pure in-process property closes the file: any bytes → the router's decode raises SerializationError
or yields something `wamp.validate` answers quickly, without raising, in a short text.

Shrinking is off by default (a failing example on a hanging router costs seconds per replay); set
COURTYARD_SHRINK=1 to get minimal examples.
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from fuzz.frames import shared_bomb
from router import wamp
from router.serializers import SerializationError, create
from tests.helpers.nodes import start_node, stop_node
from tests.wamppeer import Peer, Undecodable, deep_ok, encode, open_peer, same

ensure = pytest_twisted.ensureDeferred
SERIALIZERS = ("json", "msgpack", "cbor")
TRANSPORTS = ("ws", "rs")
TOPIC = "com.prop.topic"
ANSWER_TIMEOUT = 3.0
MAX_PENDING = 4  # small, so that leaked pending-call slots show within a few examples
SPEC_URI = re.compile(r"^(wamp|courtyard)\.(error|close)\.[a-z0-9_.]+$")
_SURROGATE = re.compile("[\ud800-\udfff]")

_phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if os.environ.get("COURTYARD_SHRINK") else [])
SETTINGS = settings(max_examples=100, deadline=None, phases=_phases, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

# -- payloads -------------------------------------------------------------------------------------
EDGE_INTS = [0, -1, 2**31, 2**32, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1, 2**63 - 1, 2**63,
             -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, -(2**64), 2**100, -(2**100), 10**40]
EDGE_STRS = ["", "\x00", "\x00AAAA", "\x00not base64!", "a\x00b", "\ud800", "x\udfffy", "\udbff\udc00",
             "é", "𝄞", "\u2028", "wamp.error.x", "\\u0000", "\x00" * 3]
ints = st.one_of(st.integers(-(2**31), 2**31), st.sampled_from(EDGE_INTS), st.integers())
floats = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]))
strings = st.one_of(st.text(max_size=12), st.text(st.characters(exclude_categories=()), max_size=8),
                    st.sampled_from(EDGE_STRS))
leaves = st.one_of(st.none(), st.booleans(), ints, floats, strings, st.binary(max_size=16))
# Mostly string keys (WAMP's own); now and then the int and bytes keys that msgpack and CBOR can carry.
keys = st.one_of(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8), st.sampled_from(EDGE_STRS),
                 st.integers(-3, 3), st.binary(max_size=3))
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                                      st.dictionaries(keys, inner, max_size=4)), max_leaves=16)
args_st = st.one_of(st.none(), st.lists(values, max_size=4))
kwargs_st = st.one_of(st.none(), st.dictionaries(keys, values, max_size=4))


def fits(value: Any, serializer: str) -> str:
    """Can a peer on this serializer receive the value faithfully? "yes", "no", or "maybe" (JSON's
    escaped lone surrogates and strings that look like its binary convention: either way is fine)."""
    verdict = "yes"
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str:
            if _SURROGATE.search(v):
                if serializer != "json":
                    return "no"
                verdict = "maybe"
            if serializer == "json" and v[:1] == "\x00":
                verdict = "maybe"
        elif t is float:
            if serializer == "json" and not math.isfinite(v):
                return "no"
        elif t is int:
            if serializer == "msgpack" and not -(2**63) <= v < 2**64:
                return "no"
        elif t in (list, tuple):
            stack.extend(v)
        elif t is dict:
            for k, x in v.items():
                if serializer == "json" and type(k) is not str:
                    return "no"
                stack.append(k)
                stack.append(x)
    return verdict


def round_trip(serializer: str, value: Any) -> Any:
    """What a peer on `serializer` means by `value` once encoded (tuples → lists, JSON's conventions);
    raises when that serializer cannot encode it at all."""
    import json

    from tests.wamppeer import _from_json  # the lenient half: NaN accepted, as the router accepts it

    payload = encode(serializer, value)
    if serializer == "json":
        return _from_json(json.loads(payload))
    from tests.wamppeer import decode

    return decode(serializer, payload)


def _with_payload(head: list, args: list | None, kwargs: dict | None) -> list:
    if kwargs:
        return [*head, args or [], kwargs]
    if args:
        return [*head, args]
    return head


def _payload_of(msg: list, at: int) -> tuple[list, dict]:
    return (msg[at] if len(msg) > at else []), (msg[at + 1] if len(msg) > at + 1 else {})


# -- the mesh of peers ----------------------------------------------------------------------------
class Mesh:
    """Long-lived peers on one node: a subscriber and a callee per (serializer, transport), senders
    connected on demand, and a control peer. Reconnects what an example lost (after failing it)."""

    def __init__(self, node: Any, far: Any = None) -> None:
        """`far`: a second node of the cluster, where the subscribers and callees are (the senders and the
        control peer stay on `node`): every example crosses the bus."""
        self.node = node
        self.far = far
        self.ws_port = node.ports[0].getHost().port
        self.rs_port = node.ports[1].getHost().port
        there = far or node
        self.far_ports = {"ws": there.ports[0].getHost().port, "rs": there.ports[1].getHost().port}
        self.subscribers: dict[tuple[str, str], Peer] = {}
        self.callees: dict[tuple[str, str], Peer] = {}
        self.senders: dict[tuple[str, str], Peer] = {}
        self.control: Peer | None = None
        self.seq = 0
        self.failures: list[str] = []

    async def _open(self, ser: str, tr: str, far: bool = False) -> Peer:
        port = self.far_ports[tr] if far else self.ws_port if tr == "ws" else self.rs_port
        peer = await open_peer("127.0.0.1", port, ser, tr)
        await peer.hello()
        return peer

    async def ready(self) -> None:
        fresh = False
        for ser in SERIALIZERS:
            for tr in TRANSPORTS:
                sub = self.subscribers.get((ser, tr))
                if sub is None or sub.is_closed:
                    fresh = True
                    sub = self.subscribers[(ser, tr)] = await self._open(ser, tr, far=True)
                    sub.send([32, sub.request_id(), {}, TOPIC])
                    assert (await sub.recv())[0] == 33
                callee = self.callees.get((ser, tr))
                if callee is None or callee.is_closed:
                    fresh = True
                    callee = self.callees[(ser, tr)] = await self._open(ser, tr, far=True)
                    callee.invocations = []
                    for _ in range(50):  # in a cluster a closed predecessor's registration leaves Redis a moment later
                        callee.send([64, callee.request_id(), {}, procedure(ser, tr)])
                        reply = await callee.recv()
                        if reply[0] != 8 or reply[4] != "wamp.error.procedure_already_exists":
                            break
                        await sleep(0.1)
                    assert reply[0] == 65, reply
                    callee.on_message = _echo
        if self.control is None or self.control.is_closed:
            self.control = await self._open("json", "ws")
        if fresh and self.far is not None:
            await self._known_here()

    async def _known_here(self) -> None:
        """The senders' node knows the far node's subscription and every callee (broadcasts are asynchronous)."""
        from tests.helpers.poll import until

        router = self.node.realm_router("realm1")
        procedures = [procedure(ser, tr) for ser in SERIALIZERS for tr in TRANSPORTS]

        def known() -> bool:
            return router.broker.backend.wants(TOPIC) and all(
                (r := router.dealer.lookup(p, "exact")) is not None and len(r.callees) == 1 for p in procedures)

        await until(known, 10, "the far node's subscribers and callees known")

    async def sender(self, ser: str, tr: str) -> Peer:
        peer = self.senders.get((ser, tr))
        if peer is None or peer.is_closed:
            peer = self.senders[(ser, tr)] = await self._open(ser, tr)
        return peer

    def close(self) -> None:
        peers = [*self.subscribers.values(), *self.callees.values(), *self.senders.values(), self.control,
                 getattr(self, "small_caller", None)]
        for peer in peers:
            if peer is not None:
                peer.drop()


def procedure(ser: str, tr: str) -> str:
    return f"com.prop.echo.{ser}.{tr}"


def _echo(callee: Peer, msg: list) -> None:
    """The callees' behaviour: YIELD back exactly what the INVOCATION carried, as this peer decoded it.
    A JSON callee given a string that looks like JSON's binary convention cannot say it back faithfully
    (the router would read it as binary): it answers with an ERROR instead."""
    if msg[0] == 68:
        callee.invocations.append(msg)
        args, kwargs = _payload_of(msg, 4)
        if callee.serializer == "json" and fits([args, kwargs], "json") != "yes":
            callee.send([8, 68, msg[1], {}, "wamp.error.invalid_argument", ["ambiguous in JSON"]])
            return
        try:
            callee.send(_with_payload([70, msg[1], {}], args, kwargs))
        except Exception as e:  # noqa: BLE001 - a value this peer decoded but cannot encode back
            callee.send([8, 68, msg[1], {}, "wamp.error.invalid_argument", [str(e)[:100]]])
    else:
        callee.inbox.put(msg)


async def answer(peer: Peer, request: int, seconds: float = ANSWER_TIMEOUT) -> tuple[str, Any]:
    """The router's answer to one request: ("ok", msg), ("error", uri), ("abort", uri), or a failure text."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            msg = await peer.recv(min(0.25, max(0.01, deadline - time.monotonic())))
        except Exception:  # noqa: BLE001 - a timeout slice
            if peer.is_closed and not peer.inbox.pending:
                return "fail", "connection closed without an ABORT"
            continue
        if isinstance(msg, Undecodable):
            return "fail", f"undecodable answer {msg!r}"
        if msg[0] == 3:
            return "abort", msg[2]
        if msg[0] == 8 and msg[2] == request:
            return "error", msg[4]
        if msg[0] in (17, 50) and msg[1] == request:
            return "ok", msg
    return "fail", f"no answer in {seconds}s"


@pytest.fixture
def mesh():
    """One node and its peers per test (not per example): a bug one test trips cannot fail another."""
    node = start_node(listeners=[{}, {"type": "rawsocket"}], limits={"max_pending_calls": MAX_PENDING})
    m = Mesh(node)
    failures: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event)

    m.logged = failures
    globalLogPublisher.addObserver(observe)
    yield m
    globalLogPublisher.removeObserver(observe)
    m.close()
    stop_node(node)


@pytest.fixture
def mesh2(redis_server):
    """Two nodes of one cluster: senders on A, subscribers and callees on B (issue 23: encode once,
    check once — what a node accepts either crosses the bus or is refused with the spec's error)."""
    from tests.conftest import cluster_config

    config = {"listeners": [{}, {"type": "rawsocket"}], "limits": {"max_pending_calls": MAX_PENDING}}
    a = start_node(**cluster_config(redis_server.url, "prop-a", **config))
    b = start_node(**cluster_config(redis_server.url, "prop-b", **config))
    m = Mesh(a, far=b)
    failures: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event)

    m.logged = failures
    globalLogPublisher.addObserver(observe)
    yield m
    globalLogPublisher.removeObserver(observe)
    m.close()
    stop_node(b)
    stop_node(a)


def _check_logs(m: Mesh, problems: list[str]) -> None:
    if m.logged:
        e = m.logged[0]
        problems.append(f"router logged a failure: {e.get('log_format')}: {e['log_failure'].getTraceback()[-600:]}")
        m.logged.clear()


def _check_received(name: str, got: list, expected: tuple, fit: str, delivered_required: bool,
                    problems: list[str]) -> None:
    for msg in got:
        if isinstance(msg, Undecodable):
            problems.append(f"{name} got a message it cannot decode: {msg!r}")
        elif fit != "maybe":
            with deep_ok():
                if not same(msg, expected):
                    problems.append(f"{name} got {msg!r:.300}, expected {expected!r:.300}")
    if len(got) > 1:
        problems.append(f"{name} got {len(got)} copies")
    if delivered_required and fit == "yes" and not got:
        problems.append(f"{name} got nothing though the publisher got PUBLISHED")


async def _drain_until_control(peer: Peer, marker: list, name: str, problems: list[str]) -> list:
    """Messages before the control EVENT (FIFO per connection: all the example's events came before it)."""
    got = []
    for _ in range(100):
        try:
            msg = await peer.recv(ANSWER_TIMEOUT)
        except Exception:  # noqa: BLE001
            problems.append(f"{name}: the control event never came (closed: {peer.is_closed})")
            return got
        if type(msg) is list and msg[0] == 36 and msg[4:5] == [marker]:
            return got
        if type(msg) is list and msg[0] == 36:
            got.append(tuple(_payload_of(msg, 4)))
        else:
            got.append(msg)
    return got


def _check_answer(where: str, outcome: str, detail: Any, problems: list[str]) -> None:
    """The sender got an answer in time, and an ERROR or ABORT carries a spec URI."""
    if outcome == "fail":
        problems.append(f"{where}: {detail}")
    elif outcome in ("error", "abort") and not (type(detail) is str and SPEC_URI.match(detail)):
        problems.append(f"{where}: {outcome} with a non-spec URI {detail!r}")


async def publish_everywhere(m: Mesh, args: list | None, kwargs: dict | None, tr: str,
                             frame_for: Any = None) -> None:
    """Publish the payload from each serializer (over `tr`) to the 6 subscribers; check the property."""
    await m.ready()
    problems: list[str] = []
    for ser in SERIALIZERS:
        try:
            with deep_ok():
                expected = round_trip(ser, [args or [], kwargs or {}])
        except Exception:  # noqa: BLE001 - this serializer cannot say it: nothing to send
            continue
        pub = await m.sender(ser, tr)
        rid = pub.request_id()
        with deep_ok():
            frame = frame_for(ser, rid) if frame_for else encode(ser, _with_payload(
                [16, rid, {"acknowledge": True}, TOPIC], args, kwargs))
        pub.send_bytes(frame)
        outcome, detail = await answer(pub, rid)
        where = f"PUBLISH from {ser}/{tr}"
        _check_answer(where, outcome, detail, problems)
        if outcome == "abort":
            pub.drop()
        m.seq += 1
        marker = ["control", m.seq]
        cid = m.control.request_id()
        m.control.send([16, cid, {"acknowledge": True}, TOPIC, marker])
        c_outcome, c_detail = await answer(m.control, cid)
        if c_outcome != "ok":
            problems.append(f"control publish after {where}: {c_outcome} {c_detail}")
        for (sub_ser, sub_tr), sub in m.subscribers.items():
            got = await _drain_until_control(sub, marker, f"subscriber {sub_ser}/{sub_tr}", problems)
            _check_received(f"{where} → subscriber {sub_ser}/{sub_tr}", got, tuple(expected),
                            fits(expected, sub_ser), outcome == "ok", problems)
        _check_logs(m, problems)
        if problems:
            break
    assert not problems, "\n".join(problems)


async def call_everywhere(m: Mesh, args: list | None, kwargs: dict | None, tr: str) -> None:
    """Call each of the 6 echo callees from each serializer (over `tr`); check the property."""
    await m.ready()
    problems: list[str] = []
    for ser in SERIALIZERS:
        try:
            expected = round_trip(ser, [args or [], kwargs or {}])
        except Exception:  # noqa: BLE001
            continue
        caller = await m.sender(ser, tr)
        for (callee_ser, callee_tr), callee in m.callees.items():
            if caller.is_closed:
                caller = await m.sender(ser, tr)
            rid = caller.request_id()
            callee.invocations.clear()
            caller.send(_with_payload([48, rid, {}, procedure(callee_ser, callee_tr)], args, kwargs))
            outcome, detail = await answer(caller, rid)
            where = f"CALL from {ser}/{tr} to callee {callee_ser}/{callee_tr}"
            _check_answer(where, outcome, detail, problems)
            if outcome == "ok":
                fit = "maybe" if "maybe" in (fits(expected, ser), fits(expected, callee_ser)) else "yes"
                _check_received(f"{where}: RESULT", [tuple(_payload_of(detail, 3))], tuple(expected), fit,
                                False, problems)
            if outcome == "abort":
                caller.drop()
            invocations = [tuple(_payload_of(i, 4)) for i in callee.invocations]
            for other in _pending(callee):
                if isinstance(other, Undecodable):
                    invocations.append(other)
                elif other[0] == 3:
                    problems.append(f"{where}: the callee got ABORT {other[1:]!r:.300}")
            _check_received(f"{where}: INVOCATION", invocations, tuple(expected), fits(expected, callee_ser),
                            False, problems)
            # control: the callee and its pending-call slots still work
            cid = m.control.request_id()
            m.control.send([48, cid, {}, procedure(callee_ser, callee_tr), ["control"]])
            c_outcome, c_detail = await answer(m.control, cid)
            if c_outcome != "ok" or c_detail[3:4] != [["control"]]:
                problems.append(f"control call after {where}: {c_outcome} {c_detail!r:.200}")
            _check_logs(m, problems)
            if problems:
                break
        if problems:
            break
    assert not problems, "\n".join(problems)


def _pending(peer: Peer) -> list:
    out = []
    while peer.inbox.pending:
        out.append(peer.inbox.pending.pop(0))
    return out


# -- the properties over sockets -----------------------------------------------------------------
@SETTINGS
@given(args=args_st, kwargs=kwargs_st, tr=st.sampled_from(TRANSPORTS))
@ensure
async def test_publish_reaches_every_serializer_or_is_refused(mesh, args, kwargs, tr):
    await publish_everywhere(mesh, args, kwargs, tr)


TWO_NODES = settings(SETTINGS, max_examples=30)


@TWO_NODES
@given(args=args_st, kwargs=kwargs_st, tr=st.sampled_from(TRANSPORTS))
@ensure
async def test_publish_crosses_nodes_to_every_serializer_or_is_refused(mesh2, args, kwargs, tr):
    await publish_everywhere(mesh2, args, kwargs, tr)


@TWO_NODES
@given(args=args_st, kwargs=kwargs_st, tr=st.sampled_from(TRANSPORTS))
@ensure
async def test_call_crosses_nodes_through_every_serializer_or_errs(mesh2, args, kwargs, tr):
    await call_everywhere(mesh2, args, kwargs, tr)


@SETTINGS
@given(args=args_st, kwargs=kwargs_st, tr=st.sampled_from(TRANSPORTS))
@ensure
async def test_call_round_trips_through_every_serializer_or_errs(mesh, args, kwargs, tr):
    await call_everywhere(mesh, args, kwargs, tr)


# Deep nesting, built as bytes by hand (client libraries refuse to encode past their own limits).
_DEEP = {
    ("json", "list"): (lambda n: b"[" * n + b"1" + b"]" * n),
    ("json", "dict"): (lambda n: b'{"a":' * n + b"1" + b"}" * n),
    ("msgpack", "list"): (lambda n: b"\x91" * n + b"\x01"),
    ("msgpack", "dict"): (lambda n: b"\x81\xa1a" * n + b"\x01"),
    ("cbor", "list"): (lambda n: b"\x81" * n + b"\x01"),
    ("cbor", "dict"): (lambda n: b"\xa1\x61a" * n + b"\x01"),
}
_PLACEHOLDER = "@@deep-placeholder@@"


def _deep_value(kind: str, depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


@SETTINGS
@given(depth=st.sampled_from([1, 2, 16, 32, 63, 64, 65, 100, 128, 200, 256, 399, 400, 401, 500, 511, 512, 513,
                              900, 990, 1000, 1023, 1024, 1025, 1100, 2000, 3000]),
       kind=st.sampled_from(["list", "dict"]), tr=st.sampled_from(TRANSPORTS))
@ensure
async def test_deep_nesting_is_delivered_whole_or_refused(mesh, depth, kind, tr):
    def frame_for(ser: str, rid: int) -> bytes:
        shell = encode(ser, [16, rid, {"acknowledge": True}, TOPIC, [_PLACEHOLDER]])
        hole = encode(ser, _PLACEHOLDER) if ser != "json" else b'"' + _PLACEHOLDER.encode() + b'"'
        return shell.replace(hole, _DEEP[(ser, kind)](depth))

    await publish_everywhere(mesh, [_deep_value(kind, depth)], None, tr, frame_for=frame_for)


# -- the pure property: decode → validate ---------------------------------------------------------
CODES = sorted(wamp.MESSAGE_NAMES)
messages = st.builds(lambda code, fields: [code, *fields],
                     st.one_of(st.sampled_from(CODES), ints, leaves),
                     st.lists(st.one_of(values, st.dictionaries(keys, values, max_size=3)), max_size=7))


def _shared_bomb(depth: int) -> bytes:
    """fuzz.frames' CBOR shared-reference bomb (2^depth leaves in a few bytes) as a message's first element."""
    return b"\x82" + shared_bomb(depth) + b"\x01"


@st.composite
def wire_bytes(draw: Any, ser: str) -> bytes:
    kind = draw(st.sampled_from(["random", "message", "mutated", "deep", "bomb"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.sampled_from([10, 500, 999, 1000, 1500, 5000, 100_000]))
        body = _DEEP[(ser, draw(st.sampled_from(["list", "dict"])))](depth)
        if ser == "json" and draw(st.booleans()):
            body = b'[16,1,{},"t",[' + body.replace(b"1", b'"\\u0000AA=="', 1) + b"]]"
        return body
    if kind == "bomb" and ser == "cbor":
        return _shared_bomb(draw(st.integers(0, 20)))
    msg = draw(messages)
    try:
        data = encode(ser, msg)
    except Exception:  # noqa: BLE001 - not encodable by this client: random bytes instead
        return draw(st.binary(max_size=300))
    if kind == "mutated" and data:
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["truncate", "flip", "insert"]))
        if op == "truncate":
            return data[:i]
        if op == "flip":
            return data[:i] + bytes((data[i] ^ draw(st.integers(1, 255)),)) + data[i + 1:]
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    return data


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_decode_then_validate_never_raises(ser):
    # @given on an inner function: pytest-twisted re-wraps a parametrized @given test once per parameter.
    serializer = create(ser)

    @settings(max_examples=400, deadline=None, phases=_phases, suppress_health_check=list(HealthCheck))
    @given(payload=wire_bytes(ser))
    def check(payload: bytes) -> None:
        t0 = time.monotonic()
        try:
            msg = serializer.decode(payload)
        except SerializationError:
            return
        problem = wamp.validate(msg)
        elapsed = time.monotonic() - t0
        assert problem is None or type(problem) is str
        assert problem is None or len(problem) <= 2000, f"validate's answer is {len(problem)} characters"
        assert elapsed < 1.0, f"decode + validate took {elapsed:.2f}s"

    check()


# -- answers past the caller's own limit ----------------------------------------------------------
@SETTINGS
@given(size=st.one_of(st.integers(0, 3000), st.sampled_from([900, 960, 990, 1000, 1024, 1100, 2048])),
       callee_ser=st.sampled_from(SERIALIZERS))
@ensure
async def test_result_past_the_callers_rawsocket_limit_is_an_error_not_silence(mesh, size, callee_ser):
    """A RawSocket caller that accepts at most 1 KiB (handshake exponent 1) calls an echo callee with a
    string of `size` characters: it gets the RESULT when it fits, else an ERROR — never silence."""
    await mesh.ready()
    caller = getattr(mesh, "small_caller", None)
    if caller is None or caller.is_closed:
        caller = mesh.small_caller = await open_peer("127.0.0.1", mesh.rs_port, "json", "rs", exponent=1)
        await caller.hello()
    rid = caller.request_id()
    caller.send([48, rid, {}, procedure(callee_ser, "ws"), ["x" * size]])
    outcome, detail = await answer(caller, rid)
    problems: list[str] = []
    _check_answer(f"CALL of {size} characters to {callee_ser} from a 1 KiB RawSocket caller", outcome, detail,
                  problems)
    if outcome == "ok" and detail[3:4] != [["x" * size]]:
        problems.append(f"wrong RESULT {detail!r:.200}")
    _check_logs(mesh, problems)
    assert not problems, "\n".join(problems)
