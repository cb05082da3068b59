"""The redis session backend beyond the shared table API (tests/test_tuplespace.py runs that on both):
the mirror follows every change, other nodes read it cluster-wide (asynchronously), last activity is
written at most once per interval, and a Redis restart is healed by a resync (issue 12, point 2)."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep

from router.cluster.connection import connect, connected
from router.cluster.url import parse_redis_url
from router.storage.redis import RedisStorage
from router.tuplespace import SessionTable
from tests.helpers.tables import assert_mirrored, open_session

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def nodes(redis_server):
    """Two session tables on one real redis-server, as nodes A and B would have."""
    made = []

    async def make(node_id: str, **kw) -> SessionTable:
        conn = await connect(parse_redis_url(redis_server.url))
        storage = RedisStorage(node_id, **kw)
        storage.attach(conn)
        made.append((storage, conn))
        return SessionTable(storage)

    yield make
    for storage, conn in made:
        storage.detach()
        pytest_twisted.blockon(conn.disconnect())


@ensure
async def test_the_mirror_follows_update_and_close_after_each_flush(nodes, redis_server):
    a = await nodes("node-a")
    s = open_session(a, authid="alice", authrole="user")
    other = open_session(a, authid="alice", authrole="user")
    await a._storage.flush()
    assert_mirrored(a, redis_server)
    a.update(s.id, authid="carol", authrole="admin")
    await a._storage.flush()
    assert_mirrored(a, redis_server)
    a.close(other.id)
    await a._storage.flush()
    assert_mirrored(a, redis_server)
    a.close(s.id)
    await a._storage.flush()
    assert_mirrored(a, redis_server)
    assert redis_server.command("KEYS", "cy:*") == []  # nothing left behind


@ensure
async def test_another_node_counts_lists_and_reads_sessions_cluster_wide(nodes):
    a, b = await nodes("node-a"), await nodes("node-b")
    a1 = open_session(a, "r1", "alice", "user")
    a2 = open_session(a, "r1", "bob", "admin")
    b1 = open_session(b, "r1", "alice", "admin")
    open_session(b, "r2", "alice", "user")
    await a._storage.flush()
    await b._storage.flush()
    assert a.size() == 2 and b.size() == 2  # the synchronous API: the node's own sessions
    assert await b.cluster_size() == 4 and await b.cluster_size("r1") == 3 and await a.cluster_size("r3") == 0
    alices = await b.cluster_list("r1", authid="alice")
    assert {(d["session"], d["node"]) for d in alices} == {(a1.id, "node-a"), (b1.id, "node-b")}
    assert [d["session"] for d in await b.cluster_list("r1", authrole="admin")] == sorted([a2.id, b1.id])
    assert [d["session"] for d in await b.cluster_list("r1", authid="alice", authrole="user")] == [a1.id]
    remote = await b.cluster_details(a1.id)
    assert remote["node"] == "node-a" and remote["authid"] == "alice" and remote["realm"] == "r1"
    assert remote == {**a.to_details_map(a1.id), "node": "node-a", "idle": remote["idle"]}
    assert await b.cluster_details(12345) is None
    a.close(a1.id)
    await a._storage.flush()
    assert await b.cluster_details(a1.id) is None and await b.cluster_size("r1") == 2


@ensure
async def test_the_memory_backend_answers_the_cluster_calls_with_its_own_sessions():
    from router.storage.memory import MemoryStorage

    t = SessionTable(MemoryStorage())
    s = open_session(t, "r1", "alice", "user")
    assert await t.cluster_size() == 1 and await t.cluster_size("r2") == 0
    assert [d["session"] for d in await t.cluster_list("r1", authid="alice")] == [s.id]
    assert (await t.cluster_details(s.id))["authid"] == "alice" and await t.cluster_details(1) is None


@ensure
async def test_last_activity_is_written_at_most_once_per_interval(nodes, redis_server):
    a = await nodes("node-a", activity_interval=0.3)
    s = open_session(a)
    await a._storage.flush()
    written = float(redis_server.command("HGET", f"cy:s:{s.id}", "last_active"))
    writes = []
    for _ in range(10):  # traffic every 50 ms for half a second
        s.last_active = time.time()
        await sleep(0.05)
        writes.append(float(redis_server.command("HGET", f"cy:s:{s.id}", "last_active")))
    distinct = {w for w in writes if w != written}
    assert 1 <= len(distinct) <= 2, writes  # 0.5 s at one write per 0.3 s
    s.last_active = time.time()
    await sleep(0.5)
    assert float(redis_server.command("HGET", f"cy:s:{s.id}", "last_active")) == s.last_active


@ensure
async def test_a_redis_restart_is_healed_by_a_resync_and_the_backlog_is_bounded(nodes, redis_server):
    from tests.redisproc import RedisServer

    a = await nodes("node-a")
    kept = [open_session(a) for _ in range(3)]
    await a._storage.flush()
    port = redis_server.port
    redis_server.stop()  # Redis loses everything (no persistence)
    for _ in range(100):
        if not connected(a._storage.redis):
            break
        await sleep(0.02)
    gone = [open_session(a) for _ in range(50)]
    for s in gone:  # churn while Redis is away: the backlog is a set of ids, not a log of writes
        a.close(s.id)
    a.close(kept[0].id)
    assert a._storage.backlog() <= len(gone) + len(kept)
    restarted = RedisServer(redis_server.workdir)
    restarted.port, restarted.url = port, redis_server.url
    restarted.start()
    try:
        for _ in range(300):
            if connected(a._storage.redis):
                break
            await sleep(0.02)
        a._storage.resync()  # what the membership heartbeat does when Redis is back
        for _ in range(100):
            await a._storage.flush()
            if not a._storage.backlog():
                break
            await sleep(0.02)
        assert_mirrored(a, restarted)
        assert a.size() == 2
    finally:
        restarted.stop()
