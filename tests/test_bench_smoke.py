"""Keeps the benchmark harness (bench/) working: every scenario for about a second with small counts.

Only the shape and sanity of the JSON are checked, never timings: this machine's speed is not the
code's correctness.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--seconds", "1", "--warmup", "0.2", "--callers", "1", "--fanouts", "8,20", "--sub-procs", "1",
         "--churn-procs", "1", "--memory-sessions", "20,50", "--scaling-sessions", "10,50",
         "--startup-runs", "1", "--json"]


def run_bench(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench", *args, *SMALL], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def by_name(result: dict) -> dict[str, dict]:
    return {r["scenario"]: r for r in result["rows"]}


@pytest.fixture(scope="module")
def msgpack_all() -> dict[str, dict]:
    return by_name(run_bench("--serializer", "msgpack"))


def test_every_scenario_reports(msgpack_all):
    expected = {"ceiling-echo", "ceiling-fanout-8", "ceiling-fanout-20", "ceiling-churn", "ceiling-memory@20",
                "ceiling-memory@50", "rpc", "pubsub-8", "pubsub-20", "churn", "memory@20", "memory@50",
                "scaling-rpc@10", "scaling-rpc@50", "scaling-pubsub-8@10", "scaling-pubsub-8@50"}
    assert expected <= set(msgpack_all)


def test_measured_rows_are_sane(msgpack_all):
    for name, r in msgpack_all.items():
        if name.startswith(("matching-", "check-")):
            continue  # in process, no serializer: test_matching
        assert r["serializer"] == "msgpack"
        assert r["cost_us"] > 0, name
        if "memory" in name:
            continue
        assert r["rate"] > 0, name
        assert 0 < r["router_util"] <= 1.5, name
        assert r["clients_util"] and all(u >= 0 for u in r["clients_util"]), name
        assert r["saturated"] in ("router", "clients", "machine", "no"), name
        assert not r.get("errors"), name


def test_ratios_and_latencies(msgpack_all):
    rpc = msgpack_all["rpc"]
    assert 0 < rpc["p50_ms"] <= rpc["p99_ms"]
    for name in ("rpc", "pubsub-8", "pubsub-20", "churn", "memory@50", "scaling-rpc@50"):
        r = msgpack_all[name]
        assert r["ratio"] > 0 and r["ceiling_us"] > 0, name
    assert msgpack_all["scaling-rpc@10"]["vs_first"] == 1.0
    assert msgpack_all["pubsub-20"]["delivered_share"] > 0.5


def test_memory_and_startup(msgpack_all):
    m = msgpack_all["memory@50"]
    assert 1 < m["idle_rss_mb"] <= m["rss_mb"]
    assert 0 < m["startup_s"] < 30


def test_json_serializer_rpc():
    result = run_bench("--serializer", "json", "--scenarios", "rpc")
    (row,) = result["rows"]
    assert row["scenario"] == "rpc" and row["serializer"] == "json"
    assert row["rate"] > 0 and row["cost_us"] > 0 and row["ratio"] > 0
    assert result["meta"]["command"].startswith("scripts/bench")


def test_matching(msgpack_all):
    for probe in ("exact-hit", "prefix-hit", "wildcard-hit", "miss"):
        small, large = msgpack_all[f"matching-{probe}@10"], msgpack_all[f"matching-{probe}@10000"]
        assert small["serializer"] == "-" and small["vs_first"] == 1.0
        assert 0 < small["cost_us"] and 0 < large["cost_us"] and large["matches_us"] > 0, probe


def test_checks(msgpack_all):
    for check in ("authz-cached", "authz-uncached", "rate-window", "quota-window"):
        row = msgpack_all[f"check-{check}"]
        assert row["serializer"] == "-" and row["cost_us"] > 0 and row["cost_unit"] == "us/request", check


@pytest.mark.parametrize("profile", ["authz", "limits"])
def test_router_profiles_route_without_errors(profile):
    result = run_bench("--serializer", "msgpack", "--scenarios", "rpc", "--router-profile", profile)
    (row,) = result["rows"]
    assert row["rate"] > 0 and row["errors"] == 0
    assert result["meta"]["options"]["router_profile"] == profile


def test_workers_churn_sums_the_workers_and_reports_redis():
    """--workers 2: its own redis-server, the router's CPU summed over the supervisor and its workers."""
    result = run_bench("--serializer", "msgpack", "--scenarios", "churn", "--workers", "2")
    (row,) = result["rows"]
    assert row["scenario"] == "churn" and row["rate"] > 0 and row["errors"] == 0
    assert row["cost_us"] > 100  # a session costs the workers ~1 ms; the supervisor alone next to nothing
    # Redis's CPU is there (in 1 s it may round to 0: /proc counts in 10 ms ticks)
    assert row["redis_us"] >= 0 and result["meta"]["options"]["workers"] == 2


def test_process_scenario():
    """Session processes: a courtyard.process.call round trip against a routed call, and KiB per process."""
    rows = by_name(run_bench("--serializer", "msgpack", "--scenarios", "process"))
    for name in ("process-call-routed", "process-call-process"):
        assert rows[name]["rate"] > 0 and rows[name]["cost_us"] > 0 and not rows[name]["errors"], rows[name]
    assert rows["process-call-process"]["vs_routed"] > 0
    assert {"process-memory@20", "process-memory@50"} <= set(rows)
    assert rows["process-memory@50"]["kib_per_session_with_process"] > 0


def test_cross_node_figures_over_two_shards():
    """`--cluster --shards 2`: the cross scenario reports Redis CPU for each shard, and B's data on the
    other shard carries the calls (the home shard the answers)."""
    rows = by_name(run_bench("--cluster", "--shards", "2", "--scenarios", "cross", "--serializer", "json"))
    rpc = rows["cross-rpc"]
    assert rpc["errors"] == 0 and rpc["rate"] > 0, rpc
    assert len(rpc["redis_us_by_shard"]) == 2 and all(x > 0 for x in rpc["redis_us_by_shard"]), rpc


def test_redis_shards_compares_client_side_shards_and_redis_cluster():
    """bench/redis_shards.py runs its three set-ups; classic PUBLISH in a Redis Cluster reaches every
    shard (each pays for every message), which is why the bus shards on the client side."""
    out = subprocess.run([sys.executable, "-m", "bench.redis_shards", "--shards", "3", "--messages", "20000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["setup"]: r for r in json.loads(out.stdout)["rows"]}
    assert set(rows) == {"client-side", "cluster-publish", "cluster-spublish"}
    assert all(r["delivered_bytes"] >= 20000 * 200 for r in rows.values()), rows
    assert rows["cluster-publish"]["us_per_message_total"] > 2 * rows["client-side"]["us_per_message_total"], rows
