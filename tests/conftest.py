"""Fixtures: a real router node on an ephemeral loopback port, in the test's own reactor."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

from router.config import parse
from router.node import Node


def start_node(**config) -> Node:
    """A node from a config dict (listener port 0 unless given); the caller stops it."""
    config.setdefault("listeners", [{"port": 0}])
    config.setdefault("admin", {})
    config["admin"].setdefault("data_dir", None)  # admin changes in memory, unless a test gives a directory
    for lc in config["listeners"]:
        if "endpoint" not in lc:
            lc.setdefault("port", 0)
    node = Node(parse(config))
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
