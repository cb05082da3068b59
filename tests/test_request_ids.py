"""`limits.sequential_request_ids`: the spec's 1, 2, 3, … request ids from clients, enforced when
configured (off by default, so older clients with random ids keep working)."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from realms.schema import ConfigError
from router.config import parse
from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred
STRICT = {"limits": {"sequential_request_ids": True}}


@ensure
async def test_autobahn_clients_count_as_the_spec_says(make_node, serializer):
    node = make_node(**STRICT)
    callee = await connect(node.url, serializer)
    caller = await connect(node.url, serializer)
    reg = await callee.register(lambda x: x * 2, "com.example.double")
    got: defer.DeferredQueue = defer.DeferredQueue()
    sub = await callee.subscribe(got.put, "com.example.topic")
    for i in range(3):
        assert await caller.call("com.example.double", i) == 2 * i
        await caller.publish("com.example.topic", i, options=PublishOptions(acknowledge=True))
        assert await with_timeout(got.get()) == i
    await sub.unsubscribe()
    await reg.unregister()
    assert await caller.call("wamp.session.count") == 2  # nobody was aborted


@ensure
async def test_a_gap_is_a_protocol_violation(make_node):
    node = make_node(**STRICT)
    peer = await raw_connect(node.url)
    await peer.hello()
    peer.send([32, 1, {}, "com.example.topic"])
    assert (await peer.recv())[:2] == [33, 1]
    peer.send([16, 3, {"acknowledge": True}, "com.example.topic"])
    abort = await peer.recv()
    assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation"
    assert "expected 2" in abort[1]["message"]
    await with_timeout(peer.closed)


@ensure
async def test_the_count_starts_again_for_each_session_and_progressive_calls_repeat_it(make_node):
    node = make_node(**STRICT)
    callee = await raw_connect(node.url)
    await callee.hello(roles={"callee": {"features": {"progressive_call_invocations": True}}})
    callee.send([64, 1, {}, "com.example.upload"])
    assert (await callee.recv())[0] == 65
    caller = await raw_connect(node.url)
    await caller.hello()
    caller.send([48, 1, {"progress": True}, "com.example.upload", ["a"]])
    caller.send([48, 1, {}, "com.example.upload", ["b"]])  # the same call, its last chunk
    first, last = await callee.recv(), await callee.recv()
    assert first[4] == ["a"] and last[4] == ["b"]
    callee.send([70, first[1], {}, ["ok"]])
    assert (await caller.recv())[0] == 50
    caller.send([6, {}, "wamp.close.normal"])
    assert (await caller.recv())[0] == 6
    await caller.hello()  # a new session on the same connection counts from 1 again
    caller.send([32, 1, {}, "com.example.topic"])
    assert (await caller.recv())[:2] == [33, 1]


@ensure
async def test_off_by_default(node):
    peer = await raw_connect(node.url)
    await peer.hello()
    peer.send([32, 7, {}, "com.example.a"])
    peer.send([32, 3, {}, "com.example.b"])
    assert [(await peer.recv())[:2] for _ in range(2)] == [[33, 7], [33, 3]]


def test_config_is_validated():
    assert parse(STRICT).sequential_request_ids is True
    assert parse({}).sequential_request_ids is False
    with pytest.raises(ConfigError) as e:
        parse({"limits": {"sequential_request_ids": "yes"}})
    assert "limits.sequential_request_ids" in str(e.value)
