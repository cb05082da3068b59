"""Pub/sub across the nodes of a cluster (issue 13, point 1)."""

from __future__ import annotations

import pytest_twisted

from tests.test_cluster_purge import _until
from tests.wampclient import connect

ensure = pytest_twisted.ensureDeferred


@ensure
async def test_two_in_process_nodes_see_each_others_sessions(make_cluster, redis_server):
    a, b = await make_cluster("a"), await make_cluster("b")
    c1 = await connect(a.url)
    c2 = await connect(b.url)
    try:
        await _until(lambda: redis_server.command("SCARD", "cy:r:realm1") == 2, 5, "2 sessions in Redis")
        assert await c2.call("wamp.session.count") == 2
    finally:
        c1.leave()
        c2.leave()
