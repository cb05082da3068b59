"""The alert rules and the Grafana dashboard (issue 25), checked by the real tools: `promtool check
rules` and `promtool test rules` (a unit test per alert, contrib/prometheus/alerts_test.yml), `promtool
check metrics` on a real scrape, and a real Prometheus scraping a real node and a real two-node cluster:
every series the rules and the dashboard name is exported, every expression is valid, and the queries the
alerts use give the right values under a known load and after Redis is stopped.

prometheus and promtool are required, not optional: .ci/run installs Debian's `prometheus`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest_twisted
import yaml
from autobahn.twisted.util import sleep
from twisted.internet import threads

from tests.opsload import http_get
from tests.promproc import MISSING, Prometheus
from tests.wampclient import connect

ensure = pytest_twisted.ensureDeferred
CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
ALERTS = CONTRIB / "prometheus" / "alerts.yml"
ALERTS_TEST = CONTRIB / "prometheus" / "alerts_test.yml"
DASHBOARD = CONTRIB / "grafana" / "courtyard.json"
PROMTOOL = shutil.which("promtool")
SERIES = re.compile(r"\b(courtyard_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(?!\s*\()")


def _promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    assert PROMTOOL, MISSING
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, timeout=120)


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def dashboard_expressions() -> list[str]:
    """Every target's expression, Grafana's variables replaced as Grafana would for 'All'."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"].replace("label_values(", "").rsplit(",", 1)[0] for v in dash["templating"]["list"]]
    return [e.replace("$__rate_interval", "1m").replace('"$instance"', '".*"') for e in exprs]


def names(expr: str) -> set[str]:
    """The series an expression selects (label values in quotes are not names)."""
    return set(SERIES.findall(re.sub(r'"[^"]*"', '""', expr)))


def test_the_rules_are_valid():
    done = _promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"SUCCESS: 8 rules found" in done.stdout


def test_each_alert_has_a_unit_test_and_they_pass():
    tested = {t["alertname"] for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
              for t in test.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert tested == set(rule_expressions()), set(rule_expressions()) ^ tested
    done = _promtool("test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"SUCCESS" in done.stdout


@ensure
async def test_a_scrape_passes_promtool_check_metrics(node):
    client = await connect(node.url)
    await client.call("wamp.session.count")
    status, _, body = await http_get(node.port, "/metrics")
    assert status == 200
    done = await threads.deferToThread(_promtool, "check", "metrics", stdin=body)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr
    client.leave()


async def _query(prom: Prometheus, expr: str) -> list:
    answer = await threads.deferToThread(prom.api, "query", query=expr)
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


async def _eventually(prom: Prometheus, expr: str, check, seconds: float = 20.0) -> list:
    """The query's result once `check(result)` holds (Prometheus scrapes and evaluates every second)."""
    for _ in range(int(seconds / 0.25)):
        result = await _query(prom, expr)
        if check(result):
            return result
        await sleep(0.25)
    raise AssertionError(f"{expr}: {result}")


def _by_instance(result: list) -> dict[str, float]:
    return {r["metric"].get("instance"): float(r["value"][1]) for r in result}


@ensure
async def test_prometheus_scrapes_a_node_and_a_cluster_with_every_series_the_rules_and_dashboard_use(
        make_node, make_cluster, redis_server, tmp_path):
    solo = make_node()
    a = await make_cluster("a")
    b = await make_cluster("b")
    where = {f"127.0.0.1:{n.port}": n for n in (solo, a, b)}
    solo_at, a_at, b_at = (f"127.0.0.1:{n.port}" for n in (solo, a, b))
    prom = await threads.deferToThread(Prometheus(tmp_path / "prom", list(where)).start)
    try:
        # a known load: 3 sessions on a, 2 on b; a callee on b called 7 times from a; one on solo
        callee = await connect(b.url)
        await callee.register(lambda x: x * 2, "com.example.double")
        others = [await connect(b.url)]
        callers = [await connect(a.url) for _ in range(3)]
        lone = await connect(solo.url)
        for _ in range(50):  # b's registration reaches a through Redis
            try:
                await callers[0].call("com.example.double", 1)
                break
            except Exception:
                await sleep(0.05)
        for i in range(7):
            assert await callers[i % 3].call("com.example.double", i) == 2 * i
        await _eventually(prom, 'up{job="courtyard"}', lambda r: len(r) == 3 and all(v == 1 for v in
                                                                                     _by_instance(r).values()))
        sessions = await _eventually(prom, 'sum by (instance) (courtyard_sessions{realm="realm1"})',
                                     lambda r: _by_instance(r) == {solo_at: 1, a_at: 3, b_at: 2})
        assert len(sessions) == 3
        calls = await _eventually(prom, f'courtyard_call_duration_seconds_count{{instance="{a_at}", realm="realm1"}}',
                                  lambda r: r and float(r[0]["value"][1]) >= 8)
        assert float(calls[0]["value"][1]) == 8  # the probe's first call and the 7
        live = await _eventually(prom, "courtyard_cluster_live_nodes", lambda r: _by_instance(r) == {a_at: 2, b_at: 2})
        assert live
        sent = await _eventually(prom, f'courtyard_cluster_messages_sent_total{{instance="{a_at}", peer="b"}}',
                                 lambda r: r and float(r[0]["value"][1]) >= 8)
        assert sent
        await _eventually(prom, "courtyard_cluster_bus_roundtrip_age_seconds < 2",
                          lambda r: set(_by_instance(r)) == {a_at, b_at})

        # every series named by the rules and the dashboard is exported: the cluster's by both cluster
        # nodes, every other by all three; every expression is one Prometheus accepts
        used = set().union(*map(names, [*rule_expressions().values(), *dashboard_expressions()])) - {"up"}
        assert len(used) > 30, used
        for name in sorted(used):
            nodes = {a_at, b_at} if name.startswith("courtyard_cluster_") else set(where)
            exported = _by_instance(await _query(prom, f"count by (instance) ({{__name__=\"{name}\"}})"))
            assert nodes <= set(exported), (name, exported)
        for expr in [*rule_expressions().values(), *dashboard_expressions()]:
            await _query(prom, expr)  # status success: it parses and evaluates
        quiet = await _query(prom, 'ALERTS{alertname!="CourtyardClusterNodeLost"}')
        assert quiet == [], quiet  # nothing fires under a healthy load

        # Redis stops: both cluster nodes say so, the alert's expression holds for both and the alert is
        # pending (it fires after its `for`), and the bus round trip ages
        redis_server.stop()
        await _eventually(prom, rule_expressions()["CourtyardRedisUnreachable"],
                          lambda r: set(_by_instance(r)) == {a_at, b_at})
        await _eventually(prom, 'ALERTS{alertname="CourtyardRedisUnreachable", alertstate="pending"}',
                          lambda r: set(_by_instance(r)) == {a_at, b_at})
        await _eventually(prom, "courtyard_cluster_bus_roundtrip_age_seconds > 2",
                          lambda r: set(_by_instance(r)) == {a_at, b_at})
        assert _by_instance(await _query(prom, "courtyard_cluster_redis_connected")) == {a_at: 0, b_at: 0}
    finally:
        await threads.deferToThread(prom.stop)
    for c in [callee, *others, *callers, lone]:
        c.leave()
