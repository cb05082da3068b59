"""Routers in the test's own reactor: one node, or two nodes of one cluster, on ephemeral loopback
ports. (Real `courtyard start` processes: tests/helpers/cluster.py.)"""

from __future__ import annotations

import pytest_twisted

from router.config import parse
from router.node import Node
from tests.helpers.cluster import cluster_config
from tests.helpers.poll import until


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
    parsed = parse(_defaults(config))
    if parsed.cluster is None:
        return _listening(Node(parsed))
    node = pytest_twisted.blockon(Node.connect(parsed))
    pytest_twisted.blockon(node.join_cluster())
    return _listening(node)


async def start_cluster_node(**config) -> Node:
    """start_node for a cluster member, from inside a test (the reactor's own greenlet)."""
    node = await Node.connect(parse(_defaults(config)))
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


async def known(node: Node, procedure: str, match: str = "exact", callees: int = 1) -> None:
    """Wait until `node`'s view of the cluster has the registration (broadcasts are asynchronous)."""
    def seen():
        reg = node.realm_router("realm1").dealer.lookup(procedure, match)
        return reg is not None and len(reg.callees) == callees

    await until(seen, 5, f"{procedure} with {callees} callees known on {node.config.cluster.node_id}")


def start_two_nodes(redis_url: str | list[str], **config) -> tuple[Node, Node]:
    """Nodes `a` and `b` of one cluster on `redis_url` (a list: its shards), both with `config`; the caller
    stops them."""
    a = start_node(**cluster_config(redis_url, "a", **config))
    b = start_node(**cluster_config(redis_url, "b", **config))
    return a, b


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

    @property
    def table(self):
        """Both nodes' session tables as one, for a test's look at a session wherever it is."""
        return _Tables([n.table for n in self.nodes])

    def realm_router(self, uri: str):
        """Both nodes' running realm as one: its broker reports the union of their subscriptions
        (their ids are the cluster's) and retained topics, as a test on one node would see them."""
        routers = [n.realm_router(uri) for n in self.nodes]
        return type("SpreadRealm", (), {"broker": _Brokers([r.broker for r in routers]),
                                        "dealer": _Dealers([r.dealer for r in routers]), "meta": routers[0].meta})()


class _Tables:
    def __init__(self, tables: list) -> None:
        self.tables = tables

    def lookup(self, session_id: int):
        return next((s for t in self.tables if (s := t.lookup(session_id)) is not None), None)

    def fetch(self, session_id: int):
        session = self.lookup(session_id)
        if session is None:
            raise KeyError(session_id)
        return session

    def size(self, realm_uri: str | None = None) -> int:
        return sum(t.size(realm_uri) for t in self.tables)


class _Dealers:
    """Both nodes' dealers as one: registrations (their ids are the cluster's) and calls in flight."""

    def __init__(self, dealers: list) -> None:
        self.dealers = dealers

    def size(self) -> int:
        return len({r.id for d in self.dealers for r in d.registrations()})

    def pending(self) -> int:
        return sum(d.pending() for d in self.dealers)

    def lookup(self, procedure: str, match: str = "exact"):
        """The registration as seen by the node of its (first) local callee: every node has it."""
        found = [r for d in self.dealers if (r := d.lookup(procedure, match)) is not None]
        return next((r for r in found if r.local), found[0] if found else None)


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
