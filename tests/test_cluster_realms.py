"""One realm store for the cluster (issue 12, point 6): admin changes to realms and users made on one
node are kept in Redis and reach every node. Real `courtyard start` processes on a real redis-server."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
import yaml
from autobahn.wamp.exception import ApplicationError

from realms.secrets import hash_secret
from tests.helpers.cluster import assert_clean, node_process
from tests.helpers.poll import until
from tests.wampclient import Aborted, connect, with_timeout

ensure = pytest_twisted.ensureDeferred
SHOP = {"auth": {"anonymous": False, "ticket": True}}


def _admin(node):
    return connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="admin",
                   on_challenge=lambda c: "s3cret")


def _bob(node, password: str = "bob-pw"):
    return connect(node.url, realm="shop", authmethods=["ticket"], authid="bob", on_challenge=lambda c: password)


async def _within(seconds: float, attempt, what: str):
    """Retry `attempt` (a coroutine function) until it succeeds, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await attempt()
        except (Aborted, ApplicationError):
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {seconds}s: {what}") from None


@pytest.fixture
def two_nodes(tmp_path, redis_server):
    nodes = [node_process(tmp_path, n, redis_server.url) for n in "ab"]
    for n in nodes:  # a data directory configured: a cluster node still keeps its changes in Redis only
        config = yaml.safe_load(n.config_path.read_text())
        config["admin"]["data_dir"] = str(n.config_path.parent / "data")
        n.config_path.write_text(yaml.safe_dump(config))
        n.start()
    yield nodes
    for n in nodes:
        n.stop()
    assert_clean(*nodes)


@ensure
async def test_a_realm_and_user_made_on_a_join_on_b_within_a_second(two_nodes, redis_server):
    a, b = two_nodes
    admin = await _admin(a)
    try:
        await admin.call("courtyard.realm.create", "shop", definition=SHOP)
        await admin.call("courtyard.user.add", "shop", "bob", role="customer", ticket="bob-pw")
        t0 = time.monotonic()
        bob = await _within(1.0, lambda: _bob(b), "bob joins shop on b")
        assert time.monotonic() - t0 < 1.0
        assert (bob.welcome.authid, bob.welcome.authrole) == ("bob", "customer")
        bob.leave()
        # nothing of it is in a node's SQLite file: the store is Redis
        assert redis_server.command("SISMEMBER", "cy:rs:realms", "shop") == 1
        assert not (a.config_path.parent / "data" / "courtyard.db").exists()  # (the pid file is there)
        # an update on b (a new ticket) is seen on a
        admin_b = await _admin(b)
        await admin_b.call("courtyard.user.update", "shop", "bob", ticket="new-pw")
        admin_b.leave()
        bob = await _within(1.0, lambda: _bob(a, "new-pw"), "bob's new ticket on a")
        bob.leave()
        with pytest.raises(Aborted):
            await _bob(a)
    finally:
        admin.leave()


@ensure
async def test_a_realm_deleted_on_a_closes_its_sessions_on_b(two_nodes):
    a, b = two_nodes
    admin = await _admin(a)
    try:
        await admin.call("courtyard.realm.create", "shop", definition=SHOP)
        await admin.call("courtyard.user.add", "shop", "bob", role="customer", ticket="bob-pw")
        on_b = await _within(1.0, lambda: _bob(b), "bob joins shop on b")
        on_a = await _bob(a)
        assert await admin.call("courtyard.realm.delete", "shop") == 1  # a's own session
        for bob in (on_a, on_b):
            left = await with_timeout(bob.left)
            assert left.reason == "courtyard.close.realm_deleted", left
        assert "realm shop deleted in the cluster: 1 session(s) here closed" in b.log()
        with pytest.raises(Aborted) as e:
            await _bob(b)
        assert e.value.reason == "wamp.error.no_such_realm"
    finally:
        admin.leave()


@ensure
async def test_a_user_removed_on_a_is_closed_on_b_and_a_yaml_realm_changed_on_a_changes_on_b(two_nodes):
    a, b = two_nodes
    admin = await _admin(a)
    try:
        await admin.call("courtyard.realm.create", "shop", definition=SHOP)
        await admin.call("courtyard.user.add", "shop", "bob", role="customer", ticket="bob-pw")
        on_b = await _within(1.0, lambda: _bob(b), "bob joins shop on b")
        assert await admin.call("courtyard.user.remove", "shop", "bob") == 0  # no session of bob's on a
        assert (await with_timeout(on_b.left)).reason == "courtyard.close.user_removed"
        # realm1 comes from the YAML: closing it to anonymous on a closes it on b
        await admin.call("courtyard.realm.update", "realm1", {"auth": {"anonymous": False, "ticket": True}})

        async def refused():
            try:
                c = await connect(b.url)
            except Aborted as e:
                return e
            c.leave()
            raise ApplicationError("still open")

        assert (await _within(1.0, refused, "realm1 closed to anonymous on b")).reason == "wamp.error.no_auth_method"
    finally:
        admin.leave()


@ensure
async def test_a_node_started_later_sees_the_changes_and_a_redis_restart_keeps_them(tmp_path, redis_server):
    a = node_process(tmp_path, "a", redis_server.url).start()
    nodes = [a]
    try:
        admin = await _admin(a)
        await admin.call("courtyard.realm.create", "shop", definition=SHOP)
        await admin.call("courtyard.user.add", "shop", "bob", role="customer", ticket="bob-pw")
        await admin.call("courtyard.realm.delete", "realm1")  # a YAML realm, deleted
        admin.leave()
        b = node_process(tmp_path, "b", redis_server.url).start()
        nodes.append(b)
        (await _bob(b)).leave()
        with pytest.raises(Aborted) as e:
            await connect(b.url)
        assert e.value.reason == "wamp.error.no_such_realm"
        # Redis away: a change is refused, not half made
        admin = await _admin(a)
        redis_server.stop()
        await until(lambda: "lost Redis" in a.log(), 5, "a notices Redis is gone")
        with pytest.raises(ApplicationError) as e:
            await admin.call("courtyard.user.add", "shop", "dave", role="customer", ticket="dave-pw")
        assert e.value.error == "courtyard.error.storage_failed"
        assert "dave" not in await admin.call("courtyard.user.list", "shop")
        admin.leave()
        # Redis restarts empty (no persistence), and node c starts on it before (or after) a and b are
        # back: the first of a and b back writes its copy again, once, and c reads it
        redis_server.start()
        c = node_process(tmp_path, "c", redis_server.url).start()
        nodes.append(c)
        await until(lambda: "is back" in a.log() and "is back" in b.log(), 15, "both nodes back on Redis")
        await until(lambda: redis_server.command("HGET", "cy:rs:r:realm1", "~kind") == "deleted", 5,
                     "the store written back")
        written_back = [n for n in nodes if "written back from this node's copy" in n.log()]
        assert len(written_back) == 1, [n.log() for n in nodes]
        assert written_back[0] is not c
        (await _within(2.0, lambda: _bob(c), "bob on c")).leave()
        # and it is still the cluster's store: a change on b reaches a
        admin_b = await _within(2.0, lambda: _admin(b), "admin on b")
        await _within(2.0, lambda: admin_b.call("courtyard.user.add", "shop", "carol", role="customer",
                                                ticket="carol-pw"), "user.add after the restart")
        admin_b.leave()
        carol = await _within(1.0, lambda: connect(a.url, realm="shop", authmethods=["ticket"], authid="carol",
                                                   on_challenge=lambda c: "carol-pw"), "carol on a")
        carol.leave()
        (await _bob(a)).leave()
    finally:
        for n in nodes:
            n.stop()
    for n in nodes:
        assert "Traceback" not in n.log() and "Unhandled" not in n.log(), n.log()


@ensure
async def test_a_node_started_on_an_emptied_redis_does_not_win_over_a_newer_copy(redis_server):
    """Redis lost the store and a new node (no copy) came first: a node with a copy writes it back,
    since its version is newer, and the new node then reads it. Two stores on real Redis connections."""
    from router.cluster.bus import Bus
    from router.cluster.connection import connect as redis_connect
    from router.cluster.realmstore import ClusterRealmStore
    from router.cluster.url import parse_redis_url

    target = parse_redis_url(redis_server.url)
    conns, installed = [], {"x": {}, "y": {}}

    async def store(name: str) -> ClusterRealmStore:
        conn = await redis_connect(target)
        conns.append(conn)
        s = ClusterRealmStore(conn, Bus(conn, target, name, 1.0), {},
                              lambda uri, realm: installed[name].__setitem__(uri, realm))
        await s.load()
        return s

    try:
        x = await store("x")
        await x.save_realm("shop", SHOP)
        await x.save_user("shop", "bob", {"role": "customer", "ticket": hash_secret("bob-pw", iterations=1000)})
        await x.reload()
        assert x.version == 2 and set(installed["x"]["shop"].users) == {"bob"}
        redis_server.command("FLUSHALL")
        y = await store("y")  # a new node on the empty Redis: the store starts at version 0
        assert y.version == 0 and installed["y"] == {}
        await x.reload()  # x is back: its copy (version 2) is newer, written back
        assert redis_server.command("GET", "cy:rs:version") == "2"
        await y.reload()
        assert set(installed["y"]["shop"].users) == {"bob"}
        await y.reload()  # y's copy is as new as Redis's: nothing written
        assert redis_server.command("GET", "cy:rs:version") == "2"
    finally:
        for conn in conns:
            await conn.disconnect()


def test_check_config_of_a_cluster_node_says_where_the_changes_are(tmp_path):
    import subprocess
    import sys

    node = node_process(tmp_path, "a", "redis://127.0.0.1:1/0")
    r = subprocess.run([sys.executable, "-m", "router.cli", "check-config", "-c", str(node.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "kept in the cluster's Redis (cluster:), not in admin.data_dir" in r.stdout
