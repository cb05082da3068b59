"""A reconnect storm (issue 24): clients from 20 loopback addresses rejoin a restarted node with
backoff, under no limits and under a per-node connection rate (bench/storm.py, scaled down)."""

from __future__ import annotations

import json
import subprocess
import sys


def _storm(clients: int, limits: dict) -> dict:
    r = subprocess.run([sys.executable, "-m", "bench.storm", "--clients", str(clients), "--limits", json.dumps(limits)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_every_client_is_back_after_a_restart():
    result = _storm(300, {})
    assert result["all_back"] and result["joined_before"] == 300 and result["peak_rss_mb"] > 0, result


def test_a_node_rate_refuses_part_of_the_storm_and_everyone_still_gets_back():
    result = _storm(300, {"connections_per_second": 50})
    assert result["all_back"], result
    assert result["refused_by_router"].get("connections_per_second", 0) > 0 and result["refused_503"] > 0, result
