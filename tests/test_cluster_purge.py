"""A dead node's sessions are purged by exactly one survivor, and every node's subscribers see them
leave (issue 12, point 4): real `courtyard start` processes, real redis-server, kill -9."""

from __future__ import annotations

import re
import time

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError

from tests.helpers.cluster import HEARTBEAT, NODE_TIMEOUT, node_process
from tests.helpers.poll import until
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@ensure
async def test_kill_9_of_a_node_purges_its_sessions_once_and_every_node_sees_them_leave(tmp_path, redis_server):
    a, b, c = (node_process(tmp_path, n, redis_server.url).start() for n in "abc")
    watchers, clients = [], []
    try:
        leaves: dict[str, list[int]] = {"a": [], "c": []}
        for name, node in (("a", a), ("c", c)):
            w = await connect(node.url)
            await w.subscribe(lambda sid, authid, authrole, name=name: leaves[name].append(sid),
                              "wamp.session.on_leave")
            watchers.append(w)
        clients = [await connect(b.url) for _ in range(3)]
        ids = sorted(cl._session_id for cl in clients)
        await until(lambda: redis_server.command("SCARD", "cy:n:b:s") == 3, 5, "b's sessions in Redis")
        b.proc.kill()
        b.proc.wait(10)
        t0 = time.monotonic()
        await until(lambda: sorted(leaves["a"]) == ids and sorted(leaves["c"]) == ids,
                     NODE_TIMEOUT + HEARTBEAT + 2.0, f"on_leave for {ids} on a and c, got {leaves}")
        took = time.monotonic() - t0
        await sleep(3 * HEARTBEAT)
        assert sorted(leaves["a"]) == ids and sorted(leaves["c"]) == ids  # once each, no second purge
        assert took < NODE_TIMEOUT + HEARTBEAT + 0.5, took
        purges = [line for node in (a, c) for line in node.log().splitlines() if "node b is dead" in line]
        assert len(purges) == 1 and re.search(r"purged its 3 sessions", purges[0]), purges
        assert redis_server.command("EXISTS", "cy:n:b:s") == 0
        assert redis_server.command("SISMEMBER", "cy:nodes", "b") == 0
        assert all(redis_server.command("EXISTS", f"cy:s:{sid}") == 0 for sid in ids)
        assert {int(x) for x in redis_server.command("SMEMBERS", "cy:sessions")} == {w._session_id for w in watchers}
        assert not [n for n in (a, c) if "Traceback" in n.log() or "Unhandled" in n.log()]
    finally:
        for cl in watchers + clients:
            if cl.is_connected():
                cl.leave()
        for node in (a, b, c):
            node.stop()


@ensure
async def test_two_survivors_racing_for_one_dead_node_purge_it_once(redis_server):
    """The claim is atomic: two purgers started in the same instant, on their own connections."""
    from twisted.internet import defer

    from router.cluster.connection import connect
    from router.cluster.purge import Purger
    from router.cluster.url import parse_redis_url
    from router.storage.redis import RedisStorage
    from router.tuplespace import SessionTable
    from tests.helpers.tables import open_session

    target = parse_redis_url(redis_server.url)
    conns = [await connect(target) for _ in range(3)]
    try:
        dead = RedisStorage("b")
        dead.attach(conns[0])
        table = SessionTable(dead)
        ids = sorted(open_session(table, realm="réalm" if i % 2 else "realm1", authid=f"u{i}").id for i in range(20))
        await dead.flush()
        dead.detach()  # b dies: its records stay in Redis, its key (never set here) is gone
        await conns[0].sadd("cy:nodes", ["b"])
        announced = []
        purgers = [Purger(conns[i], f"survivor-{i}", 10.0, lambda left, i=i: announced.append((i, left)))
                   for i in (1, 2)]
        assert await purgers[0].dead_nodes() == ["b"]
        results = await defer.gatherResults([p.purge("b") for p in purgers])
        winners = [r for r in results if r is not None]
        assert len(winners) == 1 and sorted(x[1] for x in winners[0]) == ids
        assert len(announced) == 1
        assert redis_server.command("KEYS", "cy:s:*") == [] and redis_server.command("SCARD", "cy:sessions") == 0
        assert [k for k in redis_server.command("KEYS", "cy:*") if not k.startswith(("cy:purge:", "cy:nodes"))] == []
        assert await purgers[1].dead_nodes() == []
    finally:
        for c in conns:
            await c.disconnect()


@ensure
async def test_redis_restarted_under_running_nodes_gets_their_state_back(tmp_path, redis_server):
    """Redis lost and back (issue 12, point 7): one log line each way, then the node re-announces
    itself and re-writes its sessions, so the counts are right again."""
    from tests.redisproc import RedisServer

    a = node_process(tmp_path, "a", redis_server.url).start()
    clients = []
    restarted = None
    try:
        clients = [await connect(a.url) for _ in range(4)]
        ids = {cl._session_id for cl in clients}
        await until(lambda: redis_server.command("SCARD", "cy:sessions") == 4, 5, "the sessions in Redis")
        port, url, workdir = redis_server.port, redis_server.url, redis_server.workdir
        redis_server.stop()
        await until(lambda: "lost Redis at" in a.log(), 5, "the node to notice")
        with pytest.raises(ApplicationError) as e:  # answered at once, not queued until Redis is back
            await with_timeout(clients[0].call("wamp.session.count"), 2)
        assert e.value.error == "courtyard.error.cluster_unavailable"
        clients.pop().leave()  # a session leaves while Redis is away
        await sleep(0.3)
        restarted = RedisServer(workdir)
        restarted.port, restarted.url = port, url
        restarted.start()
        await until(lambda: {int(x) for x in restarted.command("SMEMBERS", "cy:sessions") or []}
                     == {cl._session_id for cl in clients}, 15, "the sessions written again")
        assert restarted.command("EXISTS", "cy:node:a") == 1 and len(ids) == 4
        await sleep(0.5)
        log = a.log()
        assert log.count("lost Redis at") == 1 and log.count("is back: re-announcing") == 1, log
        assert "Traceback" not in log and "Scheduling retry" not in log
    finally:
        for cl in clients:
            if cl.is_connected():
                cl.leave()
        a.stop()
        if restarted is not None:
            restarted.stop()


@ensure
async def test_testaments_of_a_killed_node_reach_subscribers_on_the_survivor(tmp_path, redis_server):
    """Testaments are kept in Redis when added, so they outlive their node (issue 12, point 4)."""
    a, b = (node_process(tmp_path, n, redis_server.url).start() for n in "ab")
    clients = []
    try:
        got: list = []
        watcher = await connect(a.url)
        await watcher.subscribe(lambda *args, **kw: got.append(("will", args, kw)), "com.example.will")
        await watcher.subscribe(lambda sid, *_: got.append(("left", sid)), "wamp.session.on_leave")
        clients = [watcher]
        dying = await connect(b.url)
        flushed = await connect(b.url)
        clients += [dying, flushed]
        await dying.call("wamp.session.add_testament", "com.example.will", ["last", "words"], {"by": "dying"},
                         scope="detached")
        await flushed.call("wamp.session.add_testament", "com.example.will", ["never"], {})
        await flushed.call("wamp.session.flush_testaments")  # flushed: not published
        dying_id, flushed_id = dying._session_id, flushed._session_id
        await until(lambda: redis_server.command("HGET", f"cy:s:{dying_id}", "testaments") not in (None, ""),
                     5, "the testament in Redis")
        await sleep(0.2)  # the flush's write too (a batch after the add's), or the flushed will is published
        await until(lambda: redis_server.command("HGET", f"cy:s:{flushed_id}", "testaments") == "",
                     5, "the flushed testament gone from Redis")
        b.proc.kill()
        b.proc.wait(10)
        await until(lambda: {e[1] for e in got if e[0] == "left"} == {dying_id, flushed_id},
                     NODE_TIMEOUT + HEARTBEAT + 2.0, f"both sessions leaving, got {got}")
        wills = [e for e in got if e[0] == "will"]
        assert wills == [("will", ("last", "words"), {"by": "dying"})], got
        assert got.index(wills[0]) < got.index(("left", dying_id))  # testament first, then on_leave
        assert "Traceback" not in a.log()
    finally:
        for cl in clients:
            if cl.is_connected():
                cl.leave()
        a.stop()
        b.stop()
