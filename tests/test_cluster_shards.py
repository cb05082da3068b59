"""A cluster over several Redis shards (issue 22, point 3): `cluster.redis` a list of URLs, every key and
the control plane on the first (the home shard), each node's data channel on the shard its id hashes to.
Real redis-servers, real nodes (in-process and `courtyard start`), real autobahn clients. The routing
and meta tests of the whole suite also run over two shards (the `spread` fixture's "two shards")."""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from router.cluster.bus import shard_of
from router.config import ConfigError, parse
from tests.helpers.cluster import assert_clean, cluster_config
from tests.helpers.cluster import node_process as _node
from tests.helpers.metrics import scrape
from tests.helpers.nodes import start_cluster_node
from tests.helpers.poll import until
from tests.opsload import http_get
from tests.redisproc import RedisServer
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred


# -- config -------------------------------------------------------------------------------------------------
def test_a_list_of_urls_is_one_shard_each_the_first_the_home():
    c = parse({"cluster": {"redis": ["redis://10.0.0.1:6379/0", "redis+sentinel://s1,s2/bus", "unix:///r.sock"],
                           "password": "pw"}}).cluster
    assert c.redis is c.shards[0] and len(c.shards) == 3
    assert [t.display() for t in c.shards] == ["redis://10.0.0.1:6379/0", "redis+sentinel://s1,s2/bus",
                                               "unix:///r.sock"]
    assert {t.password for t in c.shards} == {"pw"}  # cluster.password: every shard's
    assert parse({"cluster": {"redis": "redis://h"}}).cluster.shards == (parse(
        {"cluster": {"redis": "redis://h"}}).cluster.redis,)  # one URL: one shard, as before


@pytest.mark.parametrize("redis, path, words", [
    ([], "cluster.redis", "list of 1-16"),
    (["redis://h"] * 17, "cluster.redis", "list of 1-16"),
    (["redis://h", 5], "cluster.redis", "list of 1-16"),
    (["redis://a", "http://b"], "cluster.redis[1]", "redis://"),
    (["redis://a:1", "redis://a:1"], "cluster.redis", "names one shard twice"),
    ({"url": "redis://a"}, "cluster.redis", "a Redis URL or a list"),
])
def test_a_bad_shard_list_names_the_key(redis, path, words):
    with pytest.raises(ConfigError) as e:
        parse({"cluster": {"redis": redis}})
    assert str(e.value).startswith(path) and words in str(e.value), str(e.value)


def test_a_node_id_maps_to_the_same_shard_everywhere_and_ids_spread():
    assert (shard_of("a", 2), shard_of("b", 2)) == (0, 1)  # the tests' two nodes sit on different shards
    counts = [0, 0, 0]
    for i in range(3000):
        counts[shard_of(f"node-{i}", 3)] += 1
    assert all(900 < n < 1100 for n in counts), counts


# -- the wire -----------------------------------------------------------------------------------------------
def _peers(server: RedisServer) -> list[str]:
    """The client connections a redis-server has, ours (the question) left out."""
    return [line for line in server.command("CLIENT", "LIST").splitlines() if "cmd=client" not in line]


def _publishes(server: RedisServer) -> int:
    stats = server.command("INFO", "commandstats")
    line = next((x for x in stats.splitlines() if x.startswith("cmdstat_publish:")), "calls=0,")
    return int(line.split("calls=")[1].split(",")[0])


@ensure
async def test_data_crosses_on_the_receivers_shard_with_a_fixed_handful_of_connections(redis_server, second_shard):
    """b's data channel is on the second shard: the calls and events a sends it are PUBLISHed there,
    and nowhere else but the control plane goes to the home shard; each node holds one command
    connection per shard plus its subscribers, however many sessions it serves."""
    urls = [redis_server.url, second_shard.url]
    a = await start_cluster_node(**cluster_config(urls, "a"))
    b = await start_cluster_node(**cluster_config(urls, "b"))
    clients = []
    try:
        assert second_shard.command("PUBSUB", "NUMSUB", "cy:bus:data:b")[1] == 1
        assert redis_server.command("PUBSUB", "NUMSUB", "cy:bus:data:b")[1] == 0
        assert redis_server.command("PUBSUB", "NUMSUB", "cy:bus:data:a")[1] == 1
        assert redis_server.command("PUBSUB", "NUMSUB", "cy:bus:all")[1] == 2  # the control plane: home
        before = (len(_peers(redis_server)), len(_peers(second_shard)))
        # home: a and b each a command and a subscriber connection; second: both a command one, b a subscriber
        assert before == (4, 3), (_peers(redis_server), _peers(second_shard))
        callee = await connect(b.url)
        got: list = []
        await callee.register(lambda x: x * 2, "com.shard.double")
        await callee.subscribe(got.append, "com.shard.tick")
        caller = await connect(a.url)
        clients = [callee, caller]
        clients += [await connect(u) for u in [a.url, b.url] * 20]
        home0, data0 = _publishes(redis_server), _publishes(second_shard)
        for i in range(50):
            assert await with_timeout(caller.call("com.shard.double", i)) == 2 * i
            caller.publish("com.shard.tick", i)
        await until(lambda: len(got) == 50, 5, "50 events across shards")
        assert got == list(range(50))
        data = _publishes(second_shard) - data0
        assert data >= 50, data  # each CALL (and the events of its turn) went to b's shard
        home = _publishes(redis_server) - home0
        assert data <= 110 and home >= 50, (home, data)  # a's data (the answers) on the home shard, a's own
        assert (len(_peers(redis_server)), len(_peers(second_shard))) == before  # 42 sessions later
    finally:
        for c in clients:
            if c.is_connected():
                c.leave()
        for n in (b, a):
            n.config.shutdown_grace = 0.1
            await n.stop()


async def _health(node) -> str:
    status, _, body = await http_get(node.port, "/health")
    return json.loads(body)["status"]


@ensure
async def test_a_data_shard_killed_and_restarted_empty(tmp_path, redis_server, second_shard):
    """kill -9 of b's data shard while a calls a callee on b and publishes to a subscriber there: every
    call is answered (an ERROR while the shard is away, within a second or two, never silence), the
    events are counted as dropped, b's /health goes degraded; the home shard keeps the membership (no
    node purged, no session lost). The shard back empty: calls and events work again within seconds
    and /health is ok."""
    urls = [redis_server.url, second_shard.url]
    a, b = _node(tmp_path, "a", urls).start(), _node(tmp_path, "b", urls).start()
    restarted, clients = None, []
    try:
        callee, subscriber, caller = await connect(b.url), await connect(b.url), await connect(a.url)
        clients = [callee, subscriber, caller]
        await callee.register(lambda x: x, "com.shard.echo")
        got: list = []
        await subscriber.subscribe(got.append, "com.shard.tick")
        assert await with_timeout(caller.call("com.shard.echo", 0)) == 0
        port, workdir = second_shard.port, second_shard.workdir
        second_shard.proc.kill()
        second_shard.stop()
        t_kill = time.monotonic()
        outcomes, slowest = [], 0.0
        while time.monotonic() - t_kill < 4.0:
            t = time.monotonic()
            try:
                outcomes.append(await with_timeout(caller.call("com.shard.echo", 1), 5))
            except ApplicationError as e:
                outcomes.append(e.error)
            caller.publish("com.shard.tick", 1)
            slowest = max(slowest, time.monotonic() - t)
            await sleep(0.05)
        assert slowest < 2.5, slowest  # NODE_TIMEOUT plus the question to b's node at most
        assert "wamp.error.canceled" in outcomes or "courtyard.error.cluster_unavailable" in outcomes, outcomes
        await until(lambda: defer.ensureDeferred(_health(b)).addCallback(lambda s: s == "degraded"), 5,
                    "b's /health degraded")
        assert redis_server.command("SCARD", "cy:nodes") == 2  # nobody was taken for dead
        samples = await scrape(a.port)
        dropped = sum(v for (name, _), v in samples.items() if name == "courtyard_cluster_dropped_items_total")
        assert dropped > 0, "the events of the outage were not counted as dropped"
        restarted = RedisServer(workdir)
        restarted.port, restarted.url = port, second_shard.url
        restarted.start()
        t_back = time.monotonic()
        while True:
            try:
                if await with_timeout(caller.call("com.shard.echo", 2), 5) == 2:
                    break
            except ApplicationError:
                pass
            assert time.monotonic() - t_back < 5, "no call across shards within 5 s of the shard's return"
            await sleep(0.05)
        recovery = time.monotonic() - t_back
        got.clear()
        for i in range(20):
            await caller.publish("com.shard.tick", i, options=PublishOptions(acknowledge=True))
        await until(lambda: len(got) == 20, 5, "events after the shard's return")
        assert got == list(range(20))
        await until(lambda: defer.ensureDeferred(_health(b)).addCallback(lambda s: s == "ok"), 10,
                    "b's /health ok again")
        assert "purged" not in a.log() + b.log() and "lost Redis at" not in a.log() + b.log()
        assert_clean(a, b)
        print(f"\ndata shard away 4 s: slowest answer meanwhile {slowest:.2f} s, first call across shards "
              f"{recovery:.2f} s after its return")
    finally:
        for c in clients:
            if c.is_connected():
                c.leave()
        a.stop()
        b.stop()
        if restarted is not None:
            restarted.stop()


def test_a_node_listing_other_shards_than_a_running_one_is_refused_at_start(tmp_path, redis_server, second_shard):
    """Its data channel would be where the others do not send, or theirs where it does not: exit 2 with
    one line naming the shard; with the same list it joins; once every node is gone, a cluster may
    start again with another list."""
    a = _node(tmp_path, "a", [redis_server.url, second_shard.url]).start()
    c = _node(tmp_path, "c", [redis_server.url])  # a list: COURTYARD_TEST_SHARDS adds nothing to it
    try:
        with pytest.raises(RuntimeError) as e:
            c.start()
        assert c.proc.returncode == 2, c.log()
        assert "is not shard 0 of 1" in str(e.value) and "every node must list the same shards" in str(e.value)
        assert "Traceback" not in str(e.value)
        d = _node(tmp_path, "d", [redis_server.url, second_shard.url]).start()
        for n in (d, a):  # SIGTERM: each leaves the cluster
            n.signal()
            n.proc.wait(15)
    finally:
        c.stop()  # (if it started after all)
        a.stop()
    alone = _node(tmp_path, "f", redis_server.url).start()  # nobody running: the marks are written anew
    alone.stop()
