"""/metrics in Prometheus text format (issue 14): scraped before and after a known load, it counts exactly
that load; only allowed networks or a bearer token see it and the status page; switches and config."""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.types import PublishOptions

from router import __version__
from router.config import ConfigError, parse
from tests import opsload
from tests.helpers.metrics import scrape
from tests.helpers.poll import until
from tests.opsload import http_get, run_load
from tests.wampclient import connect, raw_connect

ensure = pytest_twisted.ensureDeferred
TOKEN = "s3cret-token-0123456789"


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in after, (key, sorted(k for k in after if k[0] == name))
    return after[key] - before.get(key, 0.0)


@ensure
async def test_a_known_load_shows_in_the_counts(make_node):
    node = make_node(**opsload.CONFIG)
    before = await scrape(node.port)
    clients = await run_load(node.url)
    after = await scrape(node.port)
    d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
    calls = opsload.CALLS_ADD + opsload.CALLS_MISSING + opsload.CALLS_HANGING
    # sessions per realm (a gauge: the load's clients are still joined)
    assert after[("courtyard_sessions", (("realm", "realm1"),))] == opsload.SESSIONS_REALM1
    assert after[("courtyard_sessions", (("realm", "realm2"),))] == opsload.SESSIONS_REALM2
    # messages per type, both ways
    assert d("courtyard_messages_received_total", type="CALL") == calls + opsload.DENIED
    assert d("courtyard_messages_received_total", type="PUBLISH") == opsload.PUBLISHES + opsload.REALM2_PUBLISHES
    assert d("courtyard_messages_received_total", type="YIELD") == opsload.CALLS_ADD
    assert d("courtyard_messages_received_total", type="HELLO") == opsload.SESSIONS_REALM1 + opsload.SESSIONS_REALM2 + 1
    assert d("courtyard_messages_sent_total", type="INVOCATION") == opsload.CALLS_ADD + opsload.CALLS_HANGING
    assert d("courtyard_messages_sent_total", type="RESULT") == opsload.CALLS_ADD
    assert d("courtyard_messages_sent_total", type="EVENT") == opsload.PUBLISHES * opsload.SUBSCRIBERS
    assert d("courtyard_messages_sent_total", type="PUBLISHED") == opsload.PUBLISHES + 3
    assert d("courtyard_messages_sent_total", type="WELCOME") == opsload.SESSIONS_REALM1 + opsload.SESSIONS_REALM2
    # calls accepted and routed, publications and events, pending calls
    assert d("courtyard_calls_total", realm="realm1") == calls
    assert d("courtyard_calls_routed_total", realm="realm1") == opsload.CALLS_ADD + opsload.CALLS_HANGING
    assert d("courtyard_publications_total", realm="realm1") == opsload.PUBLISHES
    assert d("courtyard_publications_total", realm="realm2") == 3
    assert d("courtyard_events_delivered_total", realm="realm1") == opsload.PUBLISHES * opsload.SUBSCRIBERS
    assert after[("courtyard_pending_calls", (("realm", "realm1"),))] == opsload.CALLS_HANGING
    # errors per URI (ERROR and ABORT sent)
    assert d("courtyard_errors_total", realm="realm1", uri="wamp.error.no_such_procedure") == opsload.CALLS_MISSING
    assert d("courtyard_errors_total", realm="realm1", uri="wamp.error.not_authorized") == opsload.DENIED
    assert d("courtyard_errors_total", realm="realm2", uri="courtyard.error.rate_limited") == 1
    assert d("courtyard_errors_total", realm="realm1", uri="wamp.error.authentication_failed") == 1  # the ABORT
    # authentication per realm, method and result, refusals per realm and reason
    assert d("courtyard_auth_total", realm="realm1", method="ticket", result="success") == 1
    assert d("courtyard_auth_total", realm="realm1", method="ticket", result="failure") == 1
    assert d("courtyard_auth_total", realm="realm1", method="anonymous", result="success") == 4
    assert d("courtyard_auth_total", realm="realm2", method="anonymous", result="success") == 1
    # every known label value was there before the load, at 0 (a first sample of 50 hides from increase())
    for key in after:
        if key[0] in ("courtyard_errors_total", "courtyard_auth_total", "courtyard_refusals_total",
                      "courtyard_messages_received_total", "courtyard_messages_sent_total"):
            assert key in before, key
    # latency: every call timed (realm1's hanging calls are not answered yet), every join, every publication
    calls_answered = opsload.CALLS_ADD + opsload.CALLS_MISSING + opsload.DENIED
    assert d("courtyard_call_duration_seconds_count", realm="realm1") == calls_answered
    assert d("courtyard_call_duration_seconds_bucket", realm="realm1", le="+Inf") == calls_answered
    assert 0 < d("courtyard_call_duration_seconds_sum", realm="realm1") < calls_answered * 1.0
    assert d("courtyard_call_duration_seconds_bucket", realm="realm1", le="0.0001") <= calls_answered
    assert d("courtyard_join_duration_seconds_count") == opsload.SESSIONS_REALM1 + opsload.SESSIONS_REALM2
    assert d("courtyard_publish_fanout_duration_seconds_count") == opsload.PUBLISHES + 3
    # registrations and subscriptions per realm (gauges), the version
    assert after[("courtyard_registrations", (("realm", "realm1"),))] >= 1
    assert after[("courtyard_subscriptions", (("realm", "realm1"),))] >= 1
    assert after[("courtyard_subscriptions", (("realm", "realm2"),))] == 0
    build = [k for k in after if k[0] == "courtyard_build_info"]
    assert len(build) == 1 and dict(build[0][1])["version"] == __version__ and after[build[0]] == 1
    assert d("courtyard_refusals_total", realm="realm1", reason="not_authorized") == opsload.DENIED
    assert d("courtyard_refusals_total", realm="realm1", reason="authentication_failed") == 1
    assert d("courtyard_refusals_total", realm="realm2", reason="rate_limited") == 1
    # the process
    assert after[("process_resident_memory_bytes", ())] > 10e6
    assert after[("process_cpu_seconds_total", ())] > 0
    for c in clients:
        c.leave()


@ensure
async def test_slow_consumer_drops_and_outgoing_bytes(make_node):
    node = make_node(listeners=[{"max_outgoing_buffer": 256 * 1024, "slow_consumer": "drop"}])
    before = await scrape(node.port)
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    peer.send([32, 1, {}, "com.example.firehose"])
    await peer.recv()
    peer.proto.transport.pauseProducing()  # stop reading: the router's socket backs up
    conn = node.table.list()[0].transport.wire
    publisher = await connect(node.url, "msgpack")
    for _ in range(400):
        await publisher.publish("com.example.firehose", "x" * 8192, options=PublishOptions(acknowledge=True))
    during = await scrape(node.port)
    assert conn.dropped_events > 0
    assert delta(before, during, "courtyard_slow_consumer_drops_total") == conn.dropped_events
    assert during[("courtyard_outgoing_buffer_bytes", ())] > 64 * 1024  # what the stalled reader has not taken
    assert delta(before, during, "courtyard_slow_consumer_disconnects_total") == 0
    peer.proto.transport.resumeProducing()
    for _ in range(200):
        after = await scrape(node.port)
        if after[("courtyard_outgoing_buffer_bytes", ())] == 0:
            break
        await sleep(0.02)
    assert after[("courtyard_outgoing_buffer_bytes", ())] == 0
    publisher.leave()


@ensure
async def test_a_slow_consumer_disconnect_is_counted(make_node):
    node = make_node(listeners=[{"max_outgoing_buffer": 64 * 1024, "slow_consumer": "disconnect"}])
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    peer.send([32, 1, {}, "com.example.firehose"])
    await peer.recv()
    peer.proto.transport.pauseProducing()
    publisher = await connect(node.url, "msgpack")
    for _ in range(400):
        await publisher.publish("com.example.firehose", "x" * 8192, options=PublishOptions(acknowledge=True))
        if node.table.size() == 1:
            break
    assert node.table.size() == 1
    after = await scrape(node.port)
    assert after[("courtyard_slow_consumer_disconnects_total", ())] == 1
    publisher.leave()


@ensure
async def test_metrics_and_status_only_for_allowed_networks_or_the_token(make_node):
    # 127.0.0.1 is not in 10.0.0.0/8: this router sees the tests as strangers
    node = make_node(http={"allow": ["10.0.0.0/8"], "token": TOKEN})
    for path in ("/metrics", "/status", "/", "/status.json"):
        status, _, body = await http_get(node.port, path)
        assert status == 403, (path, status)
        assert b"courtyard_" not in body and b"<html" not in body
        status, _, _ = await http_get(node.port, path, "Authorization: Bearer wrong-token-0123456789\r\n")
        assert status == 403, path
        status, _, body = await http_get(node.port, path, f"Authorization: Bearer {TOKEN}\r\n")
        assert status == 200, (path, body)
    status, _, body = await http_get(node.port, "/health")  # health answers everyone
    assert status == 200 and json.loads(body)["status"] == "ok"
    # the default: loopback allowed, without a token
    open_node = make_node()
    for path in ("/metrics", "/status", "/status.json"):
        assert (await http_get(open_node.port, path))[0] == 200, path


@ensure
async def test_a_trusted_proxy_forwards_the_client_address(make_node):
    """Behind a proxy on this host, the forwarded address is the one checked, not the proxy's."""
    node = make_node(listeners=[{"trusted_proxies": ["127.0.0.1"]}], http={"allow": ["127.0.0.0/8", "10.1.0.0/16"]})
    assert (await http_get(node.port, "/metrics", "X-Forwarded-For: 203.0.113.9\r\n"))[0] == 403
    assert (await http_get(node.port, "/metrics", "X-Forwarded-For: 10.1.2.3\r\n"))[0] == 200
    assert (await http_get(node.port, "/metrics"))[0] == 200  # the proxy itself


@ensure
async def test_a_disabled_endpoint_is_404(make_node):
    node = make_node(http={"health": False, "metrics": False, "status": False})
    for path in ("/health", "/metrics", "/status", "/", "/status.json"):
        assert (await http_get(node.port, path, f"Authorization: Bearer {TOKEN}\r\n"))[0] == 404, path
    node = make_node(http={"metrics": False})
    assert (await http_get(node.port, "/metrics"))[0] == 404
    assert (await http_get(node.port, "/status"))[0] == 200


@pytest.mark.parametrize("http, path, why", [
    ({"allow": ["10.0.0.0/33"]}, "http.allow[0]", "IP address or network"),
    ({"allow": "127.0.0.1"}, "http.allow", "list"),
    ({"token": "short"}, "http.token", "16 to 1024"),
    ({"token": "a" * 20 + " b"}, "http.token", "without spaces"),
    ({"metrics": "yes"}, "http.metrics", "true or false"),
    ({"dashboard": True}, "http", "dashboard"),
    ("on", "http", "mapping"),
])
def test_http_config_errors_name_the_key(http, path, why):
    with pytest.raises(ConfigError) as e:
        parse({"http": http})
    assert path in str(e.value) and why in str(e.value), str(e.value)


def test_http_config_defaults():
    conf = parse({}).http
    assert (conf.health, conf.metrics, conf.status, conf.token) == (True, True, True, None)
    assert conf.allow == ["127.0.0.0/8", "::1/128"]


@ensure
async def test_health_reports_redis_in_a_cluster_and_is_503_without_it(tmp_path, redis_server):
    """A cluster node says whether it reaches Redis; without it, 503 `degraded` (issue 14: 200 when
    the node accepts sessions and reaches Redis)."""
    from tests.helpers.cluster import node_process

    a = node_process(tmp_path, "a", redis_server.url).start()
    try:
        status, _, body = await http_get(a.port, "/health")
        seen = json.loads(body)
        assert status == 200 and 0 <= seen.pop("bus_probe_age") < 2 and seen == {
            "status": "ok", "node": "a", "sessions": 0, "redis": "ok", "bus": "ok"}, body  # its node id
        redis_server.stop()
        await until(lambda: "lost Redis at" in a.log(), 5, "the node to notice", fail=False)
        status, _, body = await http_get(a.port, "/health")
        assert status == 503 and json.loads(body)["redis"] == "unreachable", body
        assert json.loads(body)["status"] == "degraded"
    finally:
        a.stop()


@ensure
async def test_the_status_page_is_self_contained(node):
    """No CDN, no build step: the page loads nothing from anywhere but its own /status.json."""
    status, head, page = await http_get(node.port, "/status")
    assert status == 200 and head["content-type"] == "text/html; charset=utf-8"
    assert re.search(rb"""(src|href)\s*=|@import|url\(|//[a-z0-9.-]+\.[a-z]{2,}/""", page, re.I) is None
    assert b'getJSON("status.json"' in page and b"fetch(url" in page
    assert b"default-src 'self'" in head["content-security-policy"].encode()


@ensure
async def test_a_callees_own_error_uri_is_counted_as_other(make_node):
    """Only the spec's and Courtyard's error URIs are label values: a callee's own is `other`."""
    from autobahn.wamp.exception import ApplicationError

    node = make_node()
    before = await scrape(node.port)
    assert ("courtyard_errors_total", (("realm", "realm1"), ("uri", "other"))) in before
    key = ("courtyard_errors_total", (("realm", "none"), ("uri", "wamp.error.no_such_realm")))
    assert before[key] == 0  # an ABORT before a realm is known has its series from the start too
    peer = await raw_connect(node.url)
    peer.send([1, "no.such.realm", {"roles": {"caller": {}}}])
    assert (await peer.recv())[0] == 3  # ABORT

    def fail():
        raise ApplicationError("com.example.error.made_up")

    callee = await connect(node.url)
    await callee.register(fail, "com.example.fail")
    caller = await connect(node.url)
    for _ in range(3):
        with pytest.raises(ApplicationError):
            await caller.call("com.example.fail")
    after = await scrape(node.port)
    assert delta(before, after, "courtyard_errors_total", realm="realm1", uri="other") == 3
    assert delta(before, after, "courtyard_errors_total", realm="none", uri="wamp.error.no_such_realm") == 1
    assert not [k for k in after if "com.example.error.made_up" in str(k)]
    assert delta(before, after, "courtyard_call_duration_seconds_count", realm="realm1") == 3
    for c in (callee, caller):
        c.leave()


def test_every_courtyard_uri_in_the_source_is_a_known_label():
    """A new courtyard.error.* / courtyard.close.* URI must be added to router.metrics' list, or its
    errors would be counted as `other`."""
    from pathlib import Path

    from router.metrics import COURTYARD_ERRORS

    root = Path(__file__).resolve().parent.parent
    found = set()
    for path in [*root.glob("router/**/*.py"), *root.glob("realms/**/*.py")]:
        found |= set(re.findall(r'"(courtyard\.(?:error|close)\.[a-z_]+)"', path.read_text()))
    assert found <= set(COURTYARD_ERRORS), found - set(COURTYARD_ERRORS)


def test_histogram_buckets_and_quantiles():
    from router.metrics import CALL_BUCKETS, Histogram

    h = Histogram(CALL_BUCKETS)
    assert h.quantile(0.5) is None
    for v in (0.0001, 0.0002, 0.0004, 0.002, 100.0):
        h.observe(v)
    cum = dict(h.cumulative())
    assert cum["0.0001"] == 1 and cum["0.00025"] == 2 and cum["0.0005"] == 3 and cum["0.0025"] == 4
    assert cum["30.0"] == 4 and cum["+Inf"] == 5 and h.count() == 5
    assert 0.00025 <= h.quantile(0.5) <= 0.0005
