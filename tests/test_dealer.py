"""Basic Profile RPC over real sockets: REGISTER, CALL → INVOCATION → YIELD → RESULT, errors (issue 2, point 8)."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from tests.wampclient import connect, raw_callee_and_caller, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def node(spread):
    """Every test here runs on one node and on two nodes of a cluster with its clients spread."""
    return spread


@ensure
async def test_call_with_args_and_kwargs(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, "msgpack" if serializer == "json" else "json")
    await callee.register(lambda *a, **kw: {"args": list(a), "kwargs": kw}, "com.example.echo")
    result = await caller.call("com.example.echo", 1, "two", [3], four={"x": 4})
    assert result == {"args": [1, "two", [3]], "kwargs": {"four": {"x": 4}}}


@ensure
async def test_binary_payload_crosses_serializers(node):
    callee = await connect(node.url, "json")
    caller = await connect(node.url, "msgpack")
    await callee.register(lambda b: b[::-1], "com.example.reverse")
    assert await caller.call("com.example.reverse", b"\x00\x01\xff") == b"\xff\x01\x00"


@ensure
async def test_callee_error_is_relayed_with_uri_args_kwargs(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)

    def fail():
        raise ApplicationError("com.example.error.bad", "reason", 42, detail="kw")

    await callee.register(fail, "com.example.fail")
    with pytest.raises(ApplicationError) as e:
        await caller.call("com.example.fail")
    assert e.value.error == "com.example.error.bad"
    assert list(e.value.args) == ["reason", 42]
    assert e.value.kwargs == {"detail": "kw"}


@ensure
async def test_no_such_procedure(node, serializer):
    caller = await connect(node.url, serializer)
    with pytest.raises(ApplicationError) as e:
        await caller.call("com.example.nothing")
    assert e.value.error == "wamp.error.no_such_procedure"


@pytest.mark.parametrize("uri", ["com.example..double", "com.exa mple", "com.#x", "", "wamp.session.mine"])
@ensure
async def test_invalid_or_reserved_procedure_uri(node, serializer, uri):
    # autobahn checks URIs itself, so a raw peer sends what a sloppy client would.
    peer = await raw_connect(node.url, serializer)
    await peer.hello()
    peer.send([64, 1, {}, uri])
    error = await peer.recv()
    assert error[:3] == [8, 64, 1] and error[4] == "wamp.error.invalid_uri"
    if not uri.startswith("wamp."):
        peer.send([48, 2, {}, uri])
        error = await peer.recv()
        assert error[:3] == [8, 48, 2] and error[4] == "wamp.error.invalid_uri"


@ensure
async def test_procedure_already_exists(node, serializer):
    a = await connect(node.url, serializer)
    b = await connect(node.url, serializer)
    await a.register(lambda: 1, "com.example.once")
    with pytest.raises(ApplicationError) as e:
        await b.register(lambda: 2, "com.example.once")
    assert e.value.error == "wamp.error.procedure_already_exists"
    assert await b.call("com.example.once") == 1


@ensure
async def test_unregister_then_no_such_registration(node, serializer):
    peer = await raw_connect(node.url, serializer)
    await peer.hello()
    peer.send([64, 1, {}, "com.example.proc"])
    registered = await peer.recv()
    assert registered[0] == 65 and registered[1] == 1
    reg_id = registered[2]
    peer.send([66, 2, reg_id])
    assert await peer.recv() == [67, 2]
    peer.send([66, 3, reg_id])
    error = await peer.recv()
    assert error[:3] == [8, 66, 3] and error[4] == "wamp.error.no_such_registration"
    assert node.realm_router("realm1").dealer.size() == 0


@ensure
async def test_only_the_owner_may_unregister(node):
    owner = await raw_connect(node.url)
    other = await raw_connect(node.url)
    await owner.hello()
    await other.hello()
    owner.send([64, 1, {}, "com.example.mine"])
    reg_id = (await owner.recv())[2]
    other.send([66, 1, reg_id])
    error = await other.recv()
    assert error[4] == "wamp.error.no_such_registration"
    assert node.realm_router("realm1").dealer.lookup("com.example.mine") is not None


@ensure
async def test_invocation_ids_are_sequential_from_one(node):
    callee, caller, reg_id = await raw_callee_and_caller(node.url, "com.example.seq")
    for i in range(1, 4):
        caller.send([48, 100 + i, {}, "com.example.seq", [i]])
        inv = await callee.recv()
        assert inv == [68, i, reg_id, {}, [i]]
        callee.send([70, inv[1], {}, [i * 10]])
        assert await caller.recv() == [50, 100 + i, {}, [i * 10]]


@ensure
async def test_callee_leaving_mid_call_errors_the_caller_at_once(node, serializer):
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)
    started = defer.Deferred()

    def slow():
        started.callback(None)
        return defer.Deferred()  # never answers

    await callee.register(slow, "com.example.slow")
    call = caller.call("com.example.slow")
    await with_timeout(started)
    callee.disconnect()
    with pytest.raises(ApplicationError) as e:
        await with_timeout(call)
    assert e.value.error == "wamp.error.canceled"
    await sleep(0.05)
    dealer = node.realm_router("realm1").dealer
    assert dealer.size() == 0 and dealer.pending() == 0


@ensure
async def test_caller_leaving_mid_call_leaves_nothing_behind(node):
    callee, caller, reg_id = await raw_callee_and_caller(node.url, "com.example.p")
    caller.send([48, 7, {}, "com.example.p"])
    inv = await callee.recv()
    caller.drop()
    await with_timeout(caller.closed)
    await sleep(0.05)
    dealer = node.realm_router("realm1").dealer
    assert dealer.pending() == 0
    callee.send([70, inv[1], {}, ["late"]])  # a late YIELD is harmless
    callee.send([48, 1, {}, "com.example.p"])  # and the callee is still served
    assert (await callee.recv())[0] == 68
