"""Fixtures: a real router node on an ephemeral loopback port, in the test's own reactor."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

from router.config import parse
from router.node import Node


def _defaults(config: dict) -> dict:
    config.setdefault("listeners", [{"port": 0}])
    config.setdefault("admin", {})
    config["admin"].setdefault("data_dir", None)  # admin changes in memory, unless a test gives a directory
    for lc in config["listeners"]:
        if "endpoint" not in lc:
            lc.setdefault("port", 0)
    return config


def start_node(**config) -> Node:
    """A node from a config dict (listener port 0 unless given); the caller stops it. With a
    `cluster` section it joins the cluster (its Redis must be running) before it listens."""
    node = Node(parse(_defaults(config)))
    if node.config.cluster is not None:
        pytest_twisted.blockon(node.join_cluster())
    return _listening(node)


async def start_cluster_node(**config) -> Node:
    """start_node for a cluster member, from inside a test (the reactor's own greenlet)."""
    node = Node(parse(_defaults(config)))
    await node.join_cluster()
    return _listening(node)


def _listening(node: Node) -> Node:
    node.start()
    node.url = f"ws://127.0.0.1:{node.ports[0].getHost().port}/ws"
    node.port = node.ports[0].getHost().port
    return node


def stop_node(node: Node) -> None:
    node.config.shutdown_grace = 0.1  # raw test peers never answer GOODBYE
    pytest_twisted.blockon(node.stop())


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


def cluster_config(redis_url: str, node_id: str, **config) -> dict:
    """A node's config as a member of the cluster on `redis_url` (fast heartbeats for tests)."""
    config["cluster"] = {"redis": redis_url, "node_id": node_id, "heartbeat": 0.2, "node_timeout": 1.0,
                         **config.get("cluster", {})}
    return config


class Spread:
    """Two nodes of one cluster that a test drives as one router: each read of `url` gives the
    other node's address, so consecutive clients land on different nodes; everything else is
    node A's."""

    def __init__(self, a: Node, b: Node) -> None:
        self.nodes = (a, b)
        self._turn = 0

    @property
    def url(self) -> str:
        self._turn += 1
        return self.nodes[self._turn % 2].url

    def __getattr__(self, name: str):
        return getattr(self.nodes[0], name)

    def realm_router(self, uri: str):
        """Both nodes' running realm as one: its broker reports the union of their subscriptions
        (their ids are the cluster's) and retained topics, as a test on one node would see them."""
        routers = [n.realm_router(uri) for n in self.nodes]
        return type("SpreadRealm", (), {"broker": _Brokers([r.broker for r in routers]),
                                        "dealer": _Dealers([r.dealer for r in routers]), "meta": routers[0].meta})()


class _Dealers:
    """Both nodes' dealers as one: registrations (their ids are the cluster's) and calls in flight."""

    def __init__(self, dealers: list) -> None:
        self.dealers = dealers

    def size(self) -> int:
        return len({r.id for d in self.dealers for r in d.registrations()})

    def pending(self) -> int:
        return sum(d.pending() for d in self.dealers)

    def lookup(self, procedure: str, match: str = "exact"):
        return next((r for d in self.dealers if (r := d.lookup(procedure, match)) is not None), None)


class _Brokers:
    def __init__(self, brokers: list) -> None:
        self.brokers = brokers

    def _subs(self, found: list) -> list:
        return list({s.id: s for s in found}.values())

    def size(self) -> int:
        return len(self._subs([s for b in self.brokers for s in b.subscriptions()]))

    @property
    def _patterns(self) -> int:
        return len([s for s in self._subs([s for b in self.brokers for s in b.subscriptions()]) if s.match != "exact"])

    def matching(self, topic: str) -> list:
        return self._subs([s for b in self.brokers for s in b.matching(topic)])

    def retained(self) -> int:
        return len({t for b in self.brokers for t in b._retained})


@pytest.fixture(params=["one node", "two nodes"])
def spread(request):
    """The router a test drives: one node, then two nodes of a cluster with the test's clients spread
    over them (Spread). A test module runs its end-to-end tests both ways by asking for it as its
    `node` (`@pytest.fixture def node(spread): return spread`)."""
    if request.param == "one node":
        n = start_node()
        yield n
        stop_node(n)
        return
    redis = request.getfixturevalue("redis_server")
    a = start_node(**cluster_config(redis.url, "a"))
    b = start_node(**cluster_config(redis.url, "b"))
    yield Spread(a, b)
    stop_node(b)
    stop_node(a)


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


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of the test's own on a free loopback port, without persistence."""
    from tests.redisproc import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
