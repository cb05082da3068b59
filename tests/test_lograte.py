"""Logs an attacker cannot grow (issue 23, item 7), over real sockets: repeated refusals of one kind
from one session or address write the first line, then one summary per interval with the count."""

from __future__ import annotations

import pytest_twisted
from autobahn.twisted.util import sleep

from tests.helpers.peer import rpc_joined
from tests.helpers.poll import until
from tests.wampclient import raw_connect

ensure = pytest_twisted.ensureDeferred
SUBSCRIBE, SUBSCRIBED, ERROR = 32, 33, 8


def _lines(log_lines: list[str], text: str) -> list[str]:
    return [line for line in log_lines if text in line]


@ensure
async def test_refused_subscribes_are_summarised_per_session(make_node, log_lines, fresh_refusal_log):
    fresh_refusal_log.interval = 0.5
    node = make_node(limits={"max_subscriptions_per_session": 1})
    peer, other = await rpc_joined(node), await rpc_joined(node)
    peer.send([SUBSCRIBE, 1, {}, "com.t.0"])
    assert (await peer.recv())[0] == SUBSCRIBED
    for i in range(2, 502):
        peer.send([SUBSCRIBE, i, {}, f"com.t.{i}"])
    for _ in range(500):  # every one still answered with the spec's error
        assert (await peer.recv())[4] == "courtyard.error.too_many_subscriptions"
    assert len(_lines(log_lines, "refused a subscription")) == 1  # on main: 500
    other.send([SUBSCRIBE, 1, {}, "com.t.0"])
    other.send([SUBSCRIBE, 2, {}, "com.t.1"])  # another session: its own first line
    assert (await other.recv())[0] == SUBSCRIBED and (await other.recv())[0] == ERROR
    assert len(_lines(log_lines, "refused a subscription")) == 2
    await until(lambda: _lines(log_lines, "499 more like this"), 3, "the summary line")
    summary = _lines(log_lines, "499 more like this")
    assert len(summary) == 1 and "refused a subscription" in summary[0], summary
    await sleep(0.7)  # an interval with no refusal writes nothing, and the next one is a first again
    assert len(_lines(log_lines, "more like this")) == 1
    peer.send([SUBSCRIBE, 999, {}, "com.t.999"])
    assert (await peer.recv())[0] == ERROR
    assert len(_lines(log_lines, "refused a subscription")) == 4  # 2 firsts, 1 summary, 1 new first


@ensure
async def test_refused_connections_from_one_address_are_summarised(make_node, log_lines):
    node = make_node()
    for _ in range(30):  # a HELLO for a realm that does not exist: ABORT wamp.error.no_such_realm
        peer = await raw_connect(node.url)
        peer.send([1, "com.nowhere", {"roles": {"caller": {}}}])
        assert (await peer.recv())[2] == "wamp.error.no_such_realm"
    assert len(_lines(log_lines, "no_such_realm")) == 1, _lines(log_lines, "no_such_realm")  # on main: 30
