"""A burst the router makes itself reaches a peer that keeps reading (issue 23, item 5), over real
sockets: a callee with 10,000 pending calls from one caller leaves, and the router owes the caller
10,000 ERRORs at once — far past its budget and reserve. Slowness is judged by how the peer drains:
the ERRORs are held and written as it reads, and a peer that reads nothing is still disconnected."""

from __future__ import annotations

import pytest_twisted
from autobahn.twisted.util import sleep

from tests.helpers.poll import until
from tests.helpers.slowpeer import BUDGET, RESERVE, TRANSPORTS, listeners, peer_on, send_many
from tests.wampclient import raw_connect

ensure = pytest_twisted.ensureDeferred
CALL, ERROR, REGISTER, REGISTERED, INVOCATION = 48, 8, 64, 65, 68
CALLS = 10_000  # ~45 bytes an ERROR in msgpack: 450 KB, past BUDGET + RESERVE (320 KiB)


async def _callee_with_pending(node, caller) -> tuple:
    callee = await raw_connect(node.url, "msgpack")
    assert (await callee.hello())[0] == 2
    callee.send([REGISTER, 1, {}, "com.burst.slow"])
    assert (await callee.recv())[0] == REGISTERED
    send_many(caller, [[CALL, i, {}, "com.burst.slow", [i]] for i in range(1, CALLS + 1)])
    dealer = node.realm_router("realm1").dealer
    await until(lambda: sum(len(c) for c in dealer._calls.values()) == CALLS, 30, f"{CALLS} calls pending")
    return callee, dealer


@TRANSPORTS
@ensure
async def test_a_callee_leaving_with_10000_pending_calls_does_not_disconnect_a_reading_caller(make_node, transport):
    assert CALLS * 45 > BUDGET + RESERVE
    node = make_node(listeners=listeners(), limits={"max_pending_calls": CALLS})
    caller, conn, _ = await peer_on(node, transport)
    callee, dealer = await _callee_with_pending(node, caller)
    callee.drop()  # 10,000 ERRORs (canceled) owed to the caller in one go
    errors = [await caller.recv(30) for _ in range(CALLS)]  # on main: disconnected as a slow consumer
    assert all(m[0] == ERROR and m[4] == "wamp.error.canceled" for m in errors), errors[:3]
    assert sorted(m[2] for m in errors) == list(range(1, CALLS + 1))
    assert not caller.closed.called and node.stats.slow_disconnects == 0
    assert conn.held_most > 0 and conn._held is None  # the burst went through the held path, all written
    caller.send([CALL, CALLS + 1, {}, "com.burst.nobody", []])  # read again once it caught up
    assert (await caller.recv())[4] == "wamp.error.no_such_procedure"


@ensure
async def test_a_caller_that_reads_nothing_is_still_disconnected_after_the_timeout(make_node):
    node = make_node(listeners=listeners(slow_consumer_timeout=1.0), limits={"max_pending_calls": CALLS})
    caller, conn, _ = await peer_on(node, "websocket")
    callee, dealer = await _callee_with_pending(node, caller)
    caller.proto.transport.pauseProducing()  # stops reading
    callee.drop()
    await until(lambda: node.stats.slow_disconnects == 1, 10, "the stalled caller disconnected")
    assert conn._held is None and conn._held_bytes == 0
    await sleep(0)
