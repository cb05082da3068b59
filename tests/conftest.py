"""Fixtures, built from tests/helpers/ (read its __init__ first): routers in the test's own reactor
(`node`, `solo`, `make_node`, `spread`, `make_cluster`), real `courtyard start` cluster members
(`node_processes`), a redis-server of the test's own, and the log checks every test gets."""

from __future__ import annotations

import copy
import os
import signal

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from router.node import Node
from tests.helpers.cluster import assert_clean, cluster_config, node_process
from tests.helpers.nodes import Spread, start_cluster_node, start_node, start_two_nodes, stop_node

# A suite launched from a background job inherits SIGINT and SIGQUIT ignored, and so would every router,
# worker and redis-server it starts (an ignored disposition survives exec; a handler does not): the
# signal tests would then see nothing. Handled here, the children get the default dispositions.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, lambda signum, frame: None)


@pytest.fixture
def node():
    n = start_node()
    yield n
    stop_node(n)


@pytest.fixture
def solo():
    """One node, also in a module whose `node` is spread over a cluster (tests of one node's internals)."""
    n = start_node()
    yield n
    stop_node(n)


@pytest.fixture(params=["json", "msgpack"])
def serializer(request) -> str:
    return request.param


@pytest.fixture
def make_node():
    """Start nodes with a given config inside a test; all are stopped at teardown."""
    nodes: list[Node] = []

    def make(**config) -> Node:
        n = start_node(**config)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        stop_node(n)


@pytest.fixture(params=["one node", "two nodes", "two shards", "workers"])
def spread(request):
    """The router a test drives: one node, then two nodes of a cluster with the test's clients spread
    over them (Spread), the same over two Redis shards (node a's data channel on the home shard, b's on
    the other), then a real `courtyard start --workers 2` where the kernel spreads them (WorkersRouter:
    a test that reads the node's internals is skipped there). A test module runs its end-to-end tests
    all these ways by asking for it as its `node` (`@pytest.fixture def node(spread): return spread`)."""
    if request.param == "one node":
        n = start_node()
        yield n
        stop_node(n)
        return
    if request.param == "workers":
        router = request.getfixturevalue("workers_router")
        yield router
        pytest_twisted.blockon(defer.ensureDeferred(router.wait_clean()))  # the next test starts from nothing
        return
    url = request.getfixturevalue("redis_server").url
    if request.param == "two shards":
        url = [url, request.getfixturevalue("second_shard").url]
    a, b = start_two_nodes(url)
    yield Spread(a, b)
    stop_node(b)
    stop_node(a)


@pytest.fixture(params=["one node", "two nodes"])
def make_spread(request):
    """`await make(**config)`: the `spread` router, its nodes started with the test's config: one node,
    then two nodes of a cluster (Spread)."""
    redis = request.getfixturevalue("redis_server") if request.param == "two nodes" else None
    nodes: list[Node] = []

    async def make(**config):
        if redis is None:
            nodes.append(start_node(**copy.deepcopy(config)))
            return nodes[-1]
        for node_id in ("a", "b"):
            nodes.append(await start_cluster_node(**cluster_config(redis.url, node_id, **copy.deepcopy(config))))
        return Spread(*nodes[-2:])

    yield make
    for n in reversed(nodes):
        stop_node(n)


@pytest.fixture
def make_cluster(redis_server):
    """Start in-process nodes of one cluster on the test's redis-server (`await make("a")`); stopped
    at teardown."""
    nodes: list[Node] = []

    async def make(node_id: str, **config) -> Node:
        n = await start_cluster_node(**cluster_config(redis_server.url, node_id, **config))
        nodes.append(n)
        return n

    yield make
    for n in reversed(nodes):
        stop_node(n)


@pytest.fixture
def node_processes(tmp_path, redis_server):
    """Start real `courtyard start` members of one cluster on the test's redis-server:
    `a, b = node_processes("ab", config)` (each gets the test admin and the tests' timings; `cluster`
    keys go to every member). At teardown they are stopped, and none may have logged a traceback."""
    started = []

    def start(names, config: dict | None = None, **cluster):
        made = [node_process(tmp_path, name, redis_server.url, config, **cluster) for name in names]
        for n in made:
            started.append(n.start())
        return made

    yield start
    for n in started:
        n.stop()
    assert_clean(*started)


@pytest.fixture
def log_lines():
    """Every log line the router writes during the test, formatted as an operator reads it."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.fixture(autouse=True)
def fresh_refusal_log(monkeypatch):
    """Each test starts with no refusal summarised yet (router/lograte.py keys refusals by address, and
    every test's clients come from 127.0.0.1)."""
    from router import lograte

    log = lograte.RefusalLog()
    monkeypatch.setattr(lograte, "refusals", log)
    yield log
    log.stop()


@pytest.fixture(autouse=True)
def no_unhandled_errors():
    """An unhandled exception in the router is a bug: any failure logged while a test runs fails it."""
    failures: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)
    assert not failures, [f"{e.get('log_format')}: {e['log_failure'].getTraceback()[-1500:]}" for e in failures]


@pytest.fixture(scope="session")
def workers_router(tmp_path_factory):
    """One `courtyard start --workers 2` on a redis-server, shared by every test that runs spread (each
    starts and leaves its own clients); started on first use, stopped at the end of the run."""
    from tests.helpers.workers import Workers, WorkersRouter
    from tests.redisproc import RedisServer

    redis = RedisServer(tmp_path_factory.mktemp("workers-redis")).start()
    workers = Workers(tmp_path_factory.mktemp("workers"), redis.url).start()
    yield WorkersRouter(workers)
    workers.stop()
    redis.stop()


@pytest.fixture(scope="session", autouse=True)
def extra_shards(tmp_path_factory):
    """COURTYARD_TEST_SHARDS=N: every test cluster over N shards (tests/helpers/cluster.py EXTRA_SHARDS)."""
    from tests.helpers.cluster import EXTRA_SHARDS
    from tests.redisproc import RedisServer

    servers = [RedisServer(tmp_path_factory.mktemp(f"shard-{i}")).start()
               for i in range(1, int(os.environ.get("COURTYARD_TEST_SHARDS", "1")))]
    EXTRA_SHARDS.extend(s.url for s in servers)
    yield servers
    EXTRA_SHARDS.clear()
    for server in servers:
        server.stop()


@pytest.fixture
def second_shard(tmp_path):
    """Another real redis-server, for a cluster spread over two shards (`redis: [home, this]`)."""
    from tests.redisproc import RedisServer

    server = RedisServer(tmp_path / "redis-shard-1").start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of the test's own on a free loopback port, without persistence."""
    from tests.redisproc import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
