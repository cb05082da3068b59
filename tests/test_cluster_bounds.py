"""What crosses nodes is bounded and answered like what stays on one (issue 23, items 1 and 2): two
in-process nodes on the test's redis-server, raw JSON peers on each. Encode once, check once: a value a
client may send (an integer past 64 bits) crosses; a message the bus cannot carry is refused to its
client at once with the spec's error, the pending call released, the drop counted per cause."""

from __future__ import annotations

import pytest
import pytest_twisted

from realms.schema import ConfigError
from router.cluster.limits import MAX_ITEM_BYTES
from router.config import parse
from tests.helpers.nodes import known
from tests.helpers.peer import registered, rpc_joined
from tests.helpers.poll import until

ensure = pytest_twisted.ensureDeferred

CALL, RESULT, INVOCATION, YIELD, ERROR, PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = \
    48, 50, 68, 70, 8, 16, 17, 32, 33, 36
BIG = 2 ** 70


def _pending(node) -> int:
    return sum(len(c) for c in node.realm_router("realm1").dealer._calls.values())


async def _subscribed(peer, topic: str) -> None:
    peer.send([SUBSCRIBE, 1, {}, topic])
    assert (await peer.recv())[0] == SUBSCRIBED


async def _interest(a, topic: str) -> None:
    await until(lambda: a.cluster_parts[0].interest("realm1").wants(topic), 5, f"A knows B's interest in {topic}")


@ensure
async def test_an_integer_past_64_bits_crosses_nodes_in_a_call_and_its_answer(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    caller, callee = await rpc_joined(a), await rpc_joined(b)
    await registered(callee, "com.big.echo")
    await known(a, "com.big.echo")
    caller.send([CALL, 1, {}, "com.big.echo", [BIG], {"k": -BIG}])
    inv = await callee.recv()  # on main: nothing (OverflowError in Outbox.send, logged at critical)
    assert inv[0] == INVOCATION and inv[4] == [BIG] and inv[5] == {"k": -BIG}, inv
    callee.send([YIELD, inv[1], {}, [BIG + 1]])
    assert await caller.recv() == [RESULT, 1, {}, [BIG + 1]]
    assert _pending(a) == 0


@ensure
async def test_an_integer_past_64_bits_is_published_to_json_subscribers_on_the_other_node(make_cluster):
    a, b = await make_cluster("a"), await make_cluster("b")
    sub, pub = await rpc_joined(b), await rpc_joined(a)
    await _subscribed(sub, "com.big.topic")
    await _interest(a, "com.big.topic")
    pub.send([PUBLISH, 1, {"acknowledge": True}, "com.big.topic", [BIG]])
    assert (await pub.recv())[0] == PUBLISHED
    event = await sub.recv()
    assert event[0] == EVENT and event[4] == [BIG], event


def _floats(size: int) -> list:
    """A JSON payload of about `size` bytes whose msgpack form is over twice as large (9 bytes a float)."""
    return [0.5] * (size // 4)


@ensure
async def test_a_call_too_large_for_the_bus_gets_payload_size_exceeded_at_once(make_cluster):
    listener = [{"port": 0, "max_message_size": MAX_ITEM_BYTES}]
    a, b = await make_cluster("a", listeners=listener), await make_cluster("b", listeners=listener)
    caller, callee = await rpc_joined(a), await rpc_joined(b)
    await registered(callee, "com.big.echo")
    await known(a, "com.big.echo")
    caller.send([CALL, 7, {}, "com.big.echo", _floats(4 * 1024 * 1024)])
    error = await caller.recv(10)
    assert error[:5] == [ERROR, CALL, 7, {}, "wamp.error.payload_size_exceeded"], error[:5]
    assert _pending(a) == 0
    caller.send([CALL, 8, {}, "com.big.echo", [1]])  # the caller and the callee still served
    inv = await callee.recv()
    callee.send([YIELD, inv[1], {}, [2]])
    assert await caller.recv() == [RESULT, 8, {}, [2]]


@ensure
async def test_an_event_too_large_for_the_bus_is_refused_to_its_publisher_and_counted(make_cluster, log_lines):
    listener = [{"port": 0, "max_message_size": MAX_ITEM_BYTES}]
    a, b = await make_cluster("a", listeners=listener), await make_cluster("b", listeners=listener)
    local, remote, pub = await rpc_joined(a), await rpc_joined(b), await rpc_joined(a)
    await _subscribed(local, "com.big.topic")
    await _subscribed(remote, "com.big.topic")
    await _interest(a, "com.big.topic")
    pub.send([PUBLISH, 1, {"acknowledge": True}, "com.big.topic", _floats(4 * 1024 * 1024)])
    answer = await pub.recv(10)  # on main: PUBLISHED, and B's subscriber never hears of it
    assert answer[:5] == [ERROR, PUBLISH, 1, {}, "wamp.error.payload_size_exceeded"], answer[:5]
    assert (await local.recv(10))[0] == EVENT  # delivered on its own node
    part = a.cluster_parts[0]
    assert part.dropped_by == {"too_large": 1}, part.dropped_by
    assert [line for line in log_lines if "larger than the bus carries" in line], "no log line naming the cause"
    assert not [line for line in log_lines if "Redis away" in line]
    pub.send([PUBLISH, 2, {"acknowledge": True}, "com.big.topic", ["small"]])
    assert (await pub.recv())[0] == PUBLISHED
    assert (await remote.recv())[4] == ["small"]


def test_check_config_refuses_a_clustered_listener_larger_than_the_bus_carries():
    cluster = {"redis": "redis://127.0.0.1:6379/0", "node_id": "a"}
    parse({"cluster": cluster, "listeners": [{"max_message_size": MAX_ITEM_BYTES}]})
    with pytest.raises(ConfigError) as e:
        parse({"cluster": cluster, "listeners": [{"max_message_size": 32 * 1024 * 1024}]})
    assert "listeners[0].max_message_size" in str(e.value)
    parse({"listeners": [{"max_message_size": 32 * 1024 * 1024}]})  # one node: no bus to fit


@ensure
async def test_a_node_warns_when_redis_would_drop_its_bus_for_a_burst(make_cluster, redis_server, log_lines):
    """Redis's default client-output-buffer-limit for pubsub (32 MiB) is under what a node may send
    another at once (the bus's 64 MiB in flight): 8 parallel 6 MiB events then made Redis drop the other
    node's bus connection and lose them. The node says so at start; with a raised limit it is quiet."""
    from router.cluster.bus import MAX_INFLIGHT_BYTES, pubsub_hard_limit

    a = await make_cluster("a")
    assert await a.bus.check_redis_limits() == 32 * 1024 * 1024
    assert [line for line in log_lines if "client-output-buffer-limit for pubsub is 32 MiB" in line]
    redis_server.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 256mb 64mb 60")
    try:
        before = len(log_lines)
        assert await a.bus.check_redis_limits() == 256 * 1024 * 1024 > MAX_INFLIGHT_BYTES
        assert not [line for line in log_lines[before:] if "client-output-buffer-limit" in line]
    finally:
        redis_server.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60")
    assert pubsub_hard_limit([b"client-output-buffer-limit", b"normal 0 0 0 pubsub 1gb 2m 60"]) == 2**30
