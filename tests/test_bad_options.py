"""Advanced Profile options of every wrong type: each request still gets an answer (a reply, an ERROR,
or ABORT for a protocol violation), the router logs no failure (conftest), and keeps serving."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep

from tests.wampclient import raw_connect

ensure = pytest_twisted.ensureDeferred

WEIRD = [None, [], ["x"], {}, {"a": 1}, -1, 2**60, 1.5, "", "nonsense", True]
REQUESTS = {
    # message: (options keys to poison, the message with {} for options)
    "REGISTER": (["match", "invoke", "disclose_caller"], lambda o: [64, 2, o, "com.example.p2"]),
    "SUBSCRIBE": (["match", "get_retained"], lambda o: [32, 2, o, "com.example.t"]),
    "PUBLISH": (["exclude_me", "disclose_me", "eligible", "exclude", "eligible_authid",
                 "exclude_authrole", "retain", "ppt_scheme", "ppt_keyid"],
                lambda o: [16, 2, {"acknowledge": True, **o}, "com.example.t", [1]]),
    "CALL": (["receive_progress", "progress", "timeout", "disclose_me", "ppt_scheme", "ppt_cipher"],
             lambda o: [48, 2, o, "com.example.p", [1]]),
}
ANSWERS = {"REGISTER": (65, 8), "SUBSCRIBE": (33, 8), "PUBLISH": (17, 8), "CALL": (50, 8)}


async def _first(peer, callee, seconds: float = 2.0) -> bool:
    """Wait until the peer or the callee has something (a CALL's answer may come by way of the callee)."""
    for _ in range(int(seconds / 0.01)):
        if peer.inbox.pending or callee.inbox.pending:
            return True
        await sleep(0.01)
    return False


@pytest.mark.parametrize("name", list(REQUESTS))
@ensure
async def test_every_weird_option_gets_an_answer(node, name):
    keys, build = REQUESTS[name]
    callee = await raw_connect(node.url, "msgpack")
    await callee.hello(roles={"callee": {"features": {"call_canceling": True, "progressive_call_results": True,
                                                      "progressive_call_invocations": True}}})
    callee.send([64, 1, {}, "com.example.p"])
    assert (await callee.recv())[0] == 65
    for key in keys:
        for value in WEIRD:
            peer = await raw_connect(node.url, "msgpack")
            await peer.hello()
            peer.send(build({key: value}))
            if not await _first(peer, callee):
                pytest.fail(f"{name} with {key}={value!r}: no answer")
            if callee.inbox.pending:  # a CALL was routed: the callee answers, then the caller hears
                inv = await callee.recv()
                assert inv[0] == 68, (key, value, inv)
                callee.send([70, inv[1], {}, ["ok"]])
            reply = await peer.recv()
            if reply[0] == 3:  # ABORT: only for a protocol violation
                assert reply[2] == "wamp.error.protocol_violation", (key, value, reply)
                continue
            assert reply[0] in ANSWERS[name], (key, value, reply)
            peer.send([6, {}, "wamp.close.normal"])
            assert (await peer.recv())[0] == 6, (key, value)
    callee.send([48, 99, {}, "com.example.p", []])
    assert (await callee.recv())[0] == 68  # still served


@pytest.mark.parametrize("mode", [None, [], {}, 3, "", "nope", True])
@ensure
async def test_cancel_with_a_weird_mode(node, mode):
    callee = await raw_connect(node.url)
    await callee.hello(roles={"callee": {"features": {"call_canceling": True}}})
    callee.send([64, 1, {}, "com.example.p"])
    assert (await callee.recv())[0] == 65
    caller = await raw_connect(node.url)
    await caller.hello()
    caller.send([48, 1, {}, "com.example.p"])
    await callee.recv()
    caller.send([49, 1, {"mode": mode}])
    reply = await caller.recv()
    assert reply[0] == 3 and reply[2] == "wamp.error.protocol_violation", reply


@pytest.mark.parametrize("options", [{"progress": []}, {"progress": "yes"}, {"ppt_scheme": []}, {"ppt_scheme": 1}])
@ensure
async def test_yield_with_weird_options(node, options):
    callee = await raw_connect(node.url)
    await callee.hello()
    callee.send([64, 1, {}, "com.example.p"])
    assert (await callee.recv())[0] == 65
    caller = await raw_connect(node.url)
    await caller.hello()
    caller.send([48, 1, {"receive_progress": True}, "com.example.p"])
    inv = await callee.recv()
    callee.send([70, inv[1], options, ["x"]])
    reply = await caller.recv()
    assert reply[0] in (50, 8), reply


META = ["wamp.session.count", "wamp.session.list", "wamp.session.get", "wamp.session.kill",
        "wamp.session.kill_by_authid", "wamp.session.kill_by_authrole", "wamp.session.kill_all",
        "wamp.session.add_testament", "wamp.session.flush_testaments",
        "wamp.registration.list", "wamp.registration.lookup", "wamp.registration.match", "wamp.registration.get",
        "wamp.registration.list_callees", "wamp.registration.count_callees",
        "wamp.subscription.list", "wamp.subscription.lookup", "wamp.subscription.match",
        "wamp.subscription.get", "wamp.subscription.list_subscribers", "wamp.subscription.count_subscribers"]


@ensure
async def test_meta_procedures_answer_weird_arguments(node):
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    request = 0
    for procedure in META:
        for args in ([], [None], [[]], [{}], [["x", []]], ["x", {"match": []}], [2**60], [-5], ["x", [], {}, 1]):
            for kwargs in ({}, {"reason": []}, {"scope": {}}, {"publish_options": {"eligible": [[]]}}):
                request += 1
                peer.send([48, request, {}, procedure, args, kwargs])
                reply = await peer.recv()
                answered = (reply[0] == 50 and reply[1] == request) or (reply[0] == 8 and reply[2] == request)
                assert answered, (procedure, args, kwargs, reply)
    peer.send([48, request + 1, {}, "wamp.session.count"])
    assert (await peer.recv())[:2] == [50, request + 1]  # still joined, still served
