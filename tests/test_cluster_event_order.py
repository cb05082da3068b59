"""Found by scripts/soak (issue 23): in a cluster, a subscription's first subscriber gets SUBSCRIBED only
once Redis has passed the news on (router/broker.py, `cluster.created`), but it is in the subscription
at once, so a local publisher's EVENTs reach it before its SUBSCRIBED — autobahn then raises
"EVENT received for non-subscribed subscription ID" and that subscriber never gets its events. The
WAMP spec sends EVENTs only for an acknowledged subscription: the broker now adds a subscription's first
subscriber only once the backend has confirmed it."""

from __future__ import annotations

import pytest_twisted
from autobahn.twisted.util import sleep

from tests.helpers.peer import joined as _peer

ensure = pytest_twisted.ensureDeferred



@ensure
async def test_no_event_reaches_a_subscriber_before_its_subscribed(make_cluster, redis_server):
    a, _ = await make_cluster("a"), await make_cluster("b")
    pub = await _peer(a)
    early = []
    for n in range(5):
        sub = await _peer(a)
        topic = f"com.order.t{n}"
        redis_server.command("CLIENT", "PAUSE", "200", "WRITE")  # Redis slow to pass the news on, as under load
        sub.send([32, 1, {}, topic])
        await sleep(0.02)
        pub.send([16, 100 + n, {}, topic, [n]])
        first = await sub.recv(3)
        if first[0] != 33:
            early.append(first[0])
        sub.drop()
    assert not early, f"{len(early)} of 5 subscribers got an EVENT before SUBSCRIBED"
