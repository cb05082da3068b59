"""A cluster node as a real `courtyard start` process on a real redis-server: config, fail-fast start,
membership (`courtyard.node.list`, `courtyard admin nodes list`), and a single node that never loads
a Redis client (issue 12, points 1 and 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from router.config import ConfigError, parse
from tests.helpers.cluster import admin_cli, node_process
from tests.helpers.poll import wait


@pytest.mark.parametrize("cluster, path, words", [
    ({"redis": "http://127.0.0.1"}, "cluster.redis", "redis://, rediss:// or unix://"),
    ({"redis": "redis://:secret@h/x"}, "cluster.redis", "password (not shown)"),
    ({"heartbeat": 2.0}, "cluster.node_timeout", "at least twice"),
    ({"node_id": "a b"}, "cluster.node_id", "letters, digits"),
    ({"heartbeat": None}, "cluster.heartbeat", "must be given"),
    ({"password": 5}, "cluster.password", "string"),
    ({"nodes": 3}, "cluster.nodes", "unknown key"),
])
def test_cluster_config_errors_name_the_key(cluster, path, words):
    with pytest.raises(ConfigError) as e:
        parse({"cluster": cluster})
    assert str(e.value).startswith(path) and words in str(e.value)
    assert "secret" not in str(e.value)


def test_cluster_config_urls_and_backend():
    c = parse({"cluster": {"redis": "rediss://u:p%40ss@redis.example:7000/3", "node_id": "a1"}})
    t = c.cluster.redis
    assert (t.host, t.port, t.db, t.username, t.password, t.tls) == ("redis.example", 7000, 3, "u", "p@ss", True)
    assert t.display() == "rediss://u:***@redis.example:7000/3" and "p@ss" not in repr(c.cluster)
    assert c.storage == {"backend": "redis"} and (c.cluster.heartbeat, c.cluster.node_timeout) == (1.0, 3.0)
    u = parse({"cluster": {"redis": "unix:///run/redis.sock?db=2", "password": "pw"}}).cluster
    assert (u.redis.path, u.redis.db, u.redis.password) == ("/run/redis.sock", 2, "pw") and u.node_id
    assert parse({}).cluster is None and parse({}).storage == {"backend": "memory"}
    with pytest.raises(ConfigError, match="^storage.backend"):
        parse({"storage": {"backend": "redis"}})
    with pytest.raises(ConfigError, match="^storage.backend"):
        parse({"cluster": {}, "storage": {"backend": "memory"}})


def test_a_single_node_loads_no_redis_client():
    code = ("import sys\n"
            "from router.config import parse\n"
            "from router.node import Node\n"
            "n = Node(parse({'admin': {'data_dir': None}, 'listeners': [{'port': 0}]}))\n"
            "n.start()\n"
            "print(sorted(m for m in sys.modules if 'redis' in m))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_unreachable_redis_stops_the_node_with_one_line_naming_the_url(tmp_path):
    node = node_process(tmp_path, "a", "redis://:hunter2@127.0.0.1:1/0")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "router.cli", "start", "-c", str(node.config_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("courtyard: cannot start: cannot reach Redis at "
                                                   "redis://:***@127.0.0.1:1/0: "), r.stderr
    assert "hunter2" not in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    assert "listening" not in r.stdout and time.monotonic() - t0 < 10


def test_a_cluster_without_the_redis_extra_says_what_to_install(tmp_path):
    node = node_process(tmp_path, "a", "redis://127.0.0.1:1/0")
    code = ("import sys; sys.modules['txredisapi'] = None; from router.cli import main; "
            f"sys.exit(main(['start', '-c', {str(node.config_path)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip() == (
        "courtyard: cannot start: cluster: needs the Redis client: pip install 'courtyard[redis]'"), r.stderr


def test_a_wrong_redis_password_stops_the_node(tmp_path, redis_server):
    redis_server.command("CONFIG", "SET", "requirepass", "right")
    node = node_process(tmp_path, "a", redis_server.url.replace("redis://", "redis://:wrong@"))
    r = subprocess.run([sys.executable, "-m", "router.cli", "start", "-c", str(node.config_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot reach Redis at redis://:***@127.0.0.1" in r.stderr
    assert "WRONGPASS" in r.stderr


def test_two_nodes_list_each_other_and_a_stopped_one_leaves(tmp_path, redis_server):
    a = node_process(tmp_path, "a", redis_server.url).start()
    b = node_process(tmp_path, "b", redis_server.url).start()
    try:
        r = wait(lambda: (x := admin_cli(a, "--json", "nodes", "list")).returncode == 0
                  and len(json.loads(x.stdout)) == 2 and x)
        nodes = {n["id"]: n for n in json.loads(r.stdout)}
        assert nodes["a"]["address"] == a.url and nodes["b"]["address"] == b.url
        assert set(nodes["a"]) == {"id", "address", "sessions", "started", "heartbeat", "shards"}
        assert nodes["a"]["shards"][0] == redis_server.url  # cluster.redis, passwords masked
        assert nodes["a"]["started"].endswith("Z") and nodes["a"]["heartbeat"] >= nodes["a"]["started"]
        assert isinstance(nodes["b"]["sessions"], int)
        table = admin_cli(b, "nodes", "list")
        assert table.returncode == 0 and table.stdout.splitlines()[0].split() == [
            "id", "address", "sessions", "started", "heartbeat", "shards"]
        assert table.stdout.splitlines()[1].split()[-1].startswith(redis_server.url), table.stdout
        assert {line.split()[0] for line in table.stdout.splitlines()[1:]} == {"a", "b"}
        b.signal()
        b.proc.wait(15)
        assert b.proc.returncode == 0, b.log()
        assert [n["id"] for n in json.loads(admin_cli(a, "--json", "nodes", "list").stdout)] == ["a"]
        assert redis_server.command("EXISTS", "cy:node:b") == 0
    finally:
        a.stop()
        b.stop()


def test_a_killed_node_drops_out_after_node_timeout(tmp_path, redis_server):
    a = node_process(tmp_path, "a", redis_server.url).start()
    b = node_process(tmp_path, "b", redis_server.url).start()
    try:
        wait(lambda: redis_server.command("EXISTS", "cy:node:b") == 1)
        b.proc.kill()
        b.proc.wait(10)
        t0 = time.monotonic()
        wait(lambda: [n["id"] for n in json.loads(admin_cli(a, "--json", "nodes", "list").stdout)] == ["a"])
        assert time.monotonic() - t0 < 1.0 + 5.0  # node_timeout, plus an admin client's start-up
    finally:
        a.stop()
        b.stop()
