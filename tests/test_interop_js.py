"""Interop with a client we did not write: autobahn-js (Node) against the router (issue 5, issue 7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, utils

from tests.helpers.poll import until
from tests.helpers.realms import auth_realm
from tests.pki import make_pki

ensure = pytest_twisted.ensureDeferred
JS = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")


async def run_js(scenario: str, url: str, serializer: str = "json", env: dict | None = None) -> list[dict]:
    assert NODE, "node is required for the interop tests (scripts/test installs the npm packages)"
    assert (JS / "node_modules" / "autobahn").is_dir(), "run `npm install` in tests/js (scripts/test does)"
    out, err, code = await utils.getProcessOutputAndValue(NODE, [str(JS / "client.js"), scenario, url, serializer],
                                                          env=env or {}, path=str(JS))
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert code == 0, (out.decode(), err.decode())
    return lines


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@ensure
async def test_js_basic_rpc(node, serializer):
    lines = await run_js("basic", node.url, serializer)
    assert {"add": 5} in lines
    assert lines[-1]["reason"] == "wamp.close.goodbye_and_out"


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@ensure
async def test_js_progressive_call_results(node, serializer):
    lines = await run_js("progress", node.url, serializer)
    assert {"progress": [3, 2, 1], "result": "liftoff"} in lines


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@ensure
async def test_js_pattern_subscriptions_and_retained_event(node, serializer):
    lines = await run_js("patterns", node.url, serializer)
    events = next(line["events"] for line in lines if "events" in line)
    assert sorted((e["match"], e["topic"], e["args"], e["retained"]) for e in events) == [
        ("prefix", "com.js.news.kept", ["kept"], True),
        ("prefix", "com.js.news.sport", ["both"], False),
        ("prefix", "com.js.news.world", ["world"], False),
        ("wildcard", "com.js.eu.sport", ["sport"], False),
        ("wildcard", "com.js.news.sport", ["both"], False),
    ]
    assert events[0]["retained"] is True  # the retained event came first, right after SUBSCRIBED


@ensure
async def test_js_ticket(make_node):
    node = make_node(**auth_realm())
    lines = await run_js("ticket", node.url)
    joined = lines[0]
    assert (joined["authid"], joined["authmethod"], joined["authrole"]) == ("alice", "ticket", "user")


@ensure
async def test_js_salted_wampcra(make_node):
    node = make_node(**auth_realm())
    lines = await run_js("wampcra", node.url)
    joined = lines[0]
    assert (joined["authid"], joined["authmethod"], joined["authrole"]) == ("carol", "wampcra", "admin")


@ensure
async def test_js_failed_ticket_is_refused(make_node):
    node = make_node(**auth_realm())
    lines = await run_js("badticket", node.url)
    assert not any("joined" in line for line in lines)
    assert lines[-1]["reason"] == "wamp.error.authentication_failed"


@ensure
async def test_js_over_wss_with_the_test_ca(make_node, tmp_path):
    pki = make_pki(tmp_path)
    node = make_node(listeners=[{"tls": {"certificate": str(pki.certificate), "key": str(pki.key)}}])
    lines = await run_js("basic", f"wss://localhost:{node.port}/ws", env={"NODE_EXTRA_CA_CERTS": str(pki.ca)})
    assert {"add": 5} in lines
    with pytest.raises(AssertionError) as e:  # without the CA, Node refuses the certificate: no session
        await run_js("basic", f"wss://localhost:{node.port}/ws")
    assert '"add"' not in str(e.value) and node.table.size() == 0, e.value


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@ensure
async def test_js_subscriber_gets_events_published_on_another_node(make_cluster, serializer):
    """autobahn-js subscribed on node B, an autobahn-python publisher on node A (issue 13)."""
    from autobahn.wamp.types import PublishOptions

    from tests.wampclient import connect

    a, b = await make_cluster("a"), await make_cluster("b")
    js = defer.ensureDeferred(run_js("subscriber", b.url, serializer))
    pub = await connect(a.url)
    try:
        await until(lambda: a.cluster_parts[0].interest("realm1").wants("com.cross.one"), 15, "the JS subscription")
        await pub.publish("com.cross.one", 1, b"\x01\x02", options=PublishOptions(acknowledge=True))
        await pub.publish("com.cross.two", k="v", options=PublishOptions(acknowledge=True))
        lines = await js
    finally:
        pub.leave()
    events = next(line["events"] for line in lines if "events" in line)
    assert [(e["topic"], e["kwargs"] or None) for e in events] == [
        ("com.cross.one", None), ("com.cross.two", {"k": "v"})]
    assert events[0]["args"][0] == 1 and len(events[0]["args"]) == 2


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@ensure
async def test_js_caller_calls_a_callee_on_another_node(make_cluster, serializer):
    """autobahn-js calling on node A, an autobahn-python callee on node B: a plain call, progressive
    results and an error cross nodes (issue 13)."""
    from autobahn.wamp.exception import ApplicationError
    from autobahn.wamp.types import RegisterOptions

    from tests.wampclient import connect

    a, b = await make_cluster("a"), await make_cluster("b")
    callee = await connect(b.url, serializer)
    try:
        def countdown(n, details=None):
            for i in range(n, 0, -1):
                details.progress(i)
            return "liftoff"

        def fail():
            raise ApplicationError("com.cross.oops", "far away")

        await callee.register(lambda x, y: x + y, "com.cross.add")
        await callee.register(countdown, "com.cross.countdown", options=RegisterOptions(details_arg="details"))
        await callee.register(fail, "com.cross.fail")
        dealer = a.realm_router("realm1").dealer
        await until(lambda: dealer.lookup("com.cross.fail", "exact") is not None, 5, "the registrations on a")
        lines = await run_js("caller", a.url, serializer)
    finally:
        callee.leave()
    assert {"sum": 5} in lines, lines
    assert {"progress": [3, 2, 1], "result": "liftoff"} in lines, lines
    assert {"error_uri": "com.cross.oops", "error_args": ["far away"]} in lines, lines
