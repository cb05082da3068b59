"""A cluster for tests: its timings, a member's config, and N real `courtyard start` processes on one
redis-server of the test's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from realms.secrets import hash_secret
from tests.routerproc import RouterProcess

# Every cluster test runs with these: a dead node is noticed within NODE_TIMEOUT + HEARTBEAT (1.2 s)
# instead of the default 4 s. Change them here, and only here.
HEARTBEAT, NODE_TIMEOUT = 0.2, 1.0
TIMINGS = {"heartbeat": HEARTBEAT, "node_timeout": NODE_TIMEOUT}

# The admin principal of a node process: `admin` with the ticket `s3cret` (what `admin_cli` logs in as).
ADMIN_TICKET = "s3cret"
ADMIN = {"data_dir": None, "users": {"admin": {"ticket": hash_secret(ADMIN_TICKET)}}}


# COURTYARD_TEST_SHARDS=N (conftest): N-1 more redis-servers for the whole run, added to every test
# cluster's `redis` after its own, so that the cluster tests run over N shards (docs/cluster-ha.md).
EXTRA_SHARDS: list[str] = []


def cluster_config(redis_url: str | list[str], node_id: str, **config) -> dict:
    """A node's config as a member of the cluster on `redis_url` (and EXTRA_SHARDS), with the tests'
    timings (a `cluster` key in `config` adds to or overrides them)."""
    redis = [redis_url, *EXTRA_SHARDS] if EXTRA_SHARDS and isinstance(redis_url, str) else redis_url
    config["cluster"] = {"redis": redis, "node_id": node_id, **TIMINGS, **config.get("cluster", {})}
    return config


def node_process(tmp_path: Path, name: str, redis_url: str, config: dict | None = None, env: dict | None = None,
                 **cluster) -> RouterProcess:
    """A cluster member as a `courtyard start` process (not started yet), in `tmp_path/name`, with the
    test admin unless `config` has its own `admin`; `cluster` keys override the member's; `env` is added
    to the process's environment."""
    (tmp_path / name).mkdir()
    config = {"admin": ADMIN, **(config or {})}
    config["cluster"] = {**config.get("cluster", {}), **cluster}
    return RouterProcess(tmp_path / name, cluster_config(redis_url, name, **config), env=env)


def admin_cli(node: RouterProcess, *argv: str) -> subprocess.CompletedProcess:
    """`courtyard admin ARGV...` against a node process, as the test admin."""
    return subprocess.run([sys.executable, "-m", "router.cli", "admin", "--url", node.url, "--ticket", ADMIN_TICKET,
                           *argv], capture_output=True, text=True, timeout=60)


def assert_clean(*nodes: RouterProcess) -> None:
    """No node process logged a traceback or an unhandled error."""
    for n in nodes:
        log = n.log()
        assert "Traceback" not in log and "Unhandled" not in log, log
