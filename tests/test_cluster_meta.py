"""The WAMP meta API over a cluster (issue 12, point 5, session procedures): count, list and get see
every node's sessions; a kill for a session on another node reaches that node's client as GOODBYE
with the given reason. Real `courtyard start` processes on a real redis-server."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError

from tests.test_cluster_purge import _until
from tests.test_cluster_start import _node
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def two_nodes(tmp_path, redis_server):
    a = _node(tmp_path, "a", redis_server.url).start()
    b = _node(tmp_path, "b", redis_server.url).start()
    yield a, b
    a.stop()
    b.stop()
    for n in (a, b):
        assert "Traceback" not in n.log() and "Unhandled" not in n.log(), n.log()


def _leave(clients) -> None:
    """Leave with every client still connected (the others were killed by the test)."""
    for c in clients:
        if c.is_connected():
            c.leave()


@ensure
async def test_count_list_and_get_see_the_sessions_of_every_node(two_nodes, redis_server):
    a, b = two_nodes
    on_a = [await connect(a.url) for _ in range(2)]
    caller = await connect(b.url)
    try:
        ids = {c._session_id for c in on_a} | {caller._session_id}
        await _until(lambda: redis_server.command("SCARD", "cy:r:realm1") == 3, 5, "3 sessions in Redis")
        assert await caller.call("wamp.session.count") == 3
        assert await caller.call("wamp.session.count", ["anonymous"]) == 3
        assert await caller.call("wamp.session.count", ["nobody"]) == 0
        assert set(await caller.call("wamp.session.list")) == ids
        assert set(await caller.call("wamp.session.list", ["anonymous"])) == ids
        details = await caller.call("wamp.session.get", on_a[0]._session_id)
        assert details["session"] == on_a[0]._session_id and details["node"] == "a"
        assert details["realm"] == "realm1" and details["authrole"] == "anonymous"
        with pytest.raises(ApplicationError) as e:
            await caller.call("wamp.session.get", 12345)
        assert e.value.error == "wamp.error.no_such_session"
    finally:
        _leave(on_a + [caller])


@ensure
async def test_a_kill_on_one_node_says_goodbye_on_another(two_nodes, redis_server):
    a, b = two_nodes
    on_a = [await connect(a.url) for _ in range(3)]
    caller = await connect(b.url)
    try:
        await _until(lambda: redis_server.command("SCARD", "cy:r:realm1") == 4, 5, "4 sessions in Redis")
        victim = on_a[0]
        vid = victim._session_id
        assert await caller.call("wamp.session.kill", vid, reason="com.example.bye",
                                 message="see you") is None
        left = await with_timeout(victim.left)
        assert left.reason == "com.example.bye" and left.message == "see you"
        assert "killed from node b ('com.example.bye')" in a.log()
        await _until(lambda: redis_server.command("SCARD", "cy:r:realm1") == 3, 5, "the victim gone from Redis")
        assert await caller.call("wamp.session.kill_all", reason="com.example.all") == 2
        for c in on_a[1:]:
            assert (await with_timeout(c.left)).reason == "com.example.all"
        assert caller.is_connected()  # kill_all spares the caller
        with pytest.raises(ApplicationError) as e:
            await caller.call("wamp.session.kill", vid)
        assert e.value.error == "wamp.error.no_such_session"
    finally:
        _leave(on_a + [caller])


@ensure
async def test_admin_session_procedures_act_on_every_node(two_nodes, redis_server):
    """courtyard.session.* through `courtyard admin` on node b, for sessions on node a."""
    import json

    from tests.test_cluster_start import _admin

    a, b = two_nodes
    on_a = [await connect(a.url) for _ in range(2)]
    try:
        ids = sorted(c._session_id for c in on_a)
        await _until(lambda: redis_server.command("SCARD", "cy:r:realm1") == 2, 5, "2 sessions in Redis")
        assert _admin(b, "sessions", "count", "--realm", "realm1").stdout.strip() == "2"
        listed = _admin(b, "--json", "sessions", "list", "--realm", "realm1")
        assert sorted(json.loads(listed.stdout)) == ids, listed.stderr
        got = json.loads(_admin(b, "--json", "sessions", "get", str(ids[0])).stdout)
        assert got["session"] == ids[0] and got["node"] == "a"
        assert _admin(b, "sessions", "activity", "realm1", "60").stdout.strip() == "2 sessions active in the last 60 s"
        missing = _admin(b, "sessions", "get", "12345")
        assert missing.returncode == 1 and "wamp.error.no_such_session" in missing.stderr
        victim = next(c for c in on_a if c._session_id == ids[0])
        killed = _admin(b, "sessions", "kill", str(ids[0]), "--reason", "com.example.admin", "--message", "bye")
        assert killed.returncode == 0, killed.stderr
        left = await with_timeout(victim.left)
        assert left.reason == "com.example.admin" and left.message == "bye"
        other = next(c for c in on_a if c is not victim)
        authid = json.loads(_admin(b, "--json", "sessions", "get", str(other._session_id)).stdout)["authid"]
        assert _admin(b, "sessions", "kill-by-authid", "realm1", authid).stdout.strip() == "killed 1 session"
        assert (await with_timeout(other.left)).reason == "wamp.close.killed"
    finally:
        _leave(on_a)


@ensure
async def test_a_session_id_held_by_another_node_closes_the_second_session(two_nodes, redis_server):
    """Two nodes drew the same random id: the record in Redis stays the first node's, the session of
    the node that wrote second is closed (here a record in Redis is made another node's, then the
    session on a is written again)."""
    a, _ = two_nodes
    client = await connect(a.url)
    admin = await connect(a.url, realm="courtyard.admin", authmethods=["ticket"], authid="admin",
                          on_challenge=lambda c: "s3cret")
    try:
        sid = client._session_id
        await _until(lambda: redis_server.command("HGET", f"cy:s:{sid}", "node") == "a", 5, "the record in Redis")
        redis_server.command("HSET", f"cy:s:{sid}", "node", "ghost")
        await admin.call("courtyard.session.set_data", sid, {"tier": "gold"})  # a's record is written again
        left = await with_timeout(client.left)
        assert left.reason == "courtyard.close.session_id_taken", left
        assert f"session {sid}: its id is another node's session's" in a.log()
        await _until(lambda: redis_server.command("SISMEMBER", "cy:n:a:s", str(sid)) == 0, 5, "the id out of a's set")
        assert redis_server.command("HGET", f"cy:s:{sid}", "node") == "ghost"  # the other node's record stays
        assert redis_server.command("SISMEMBER", "cy:sessions", str(sid)) == 1  # with its index entries
    finally:
        _leave([client, admin])
