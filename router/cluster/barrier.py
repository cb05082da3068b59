"""Every live node has applied what this node changed before now: the barrier REGISTERED, UNREGISTERED,
SUBSCRIBED and UNSUBSCRIBED wait for, so that the next CALL or PUBLISH from any node sees the change.

A request to each other node travels on the same Redis connection as the broadcasts and after them, and
each node answers it as soon as it reads it, so an answer means every earlier broadcast was applied there.
A node that does not answer within SEEN_TIMEOUT (stalled, or listening nowhere) is not waited for.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from router.cluster.membership import MAX_NODES, NODES

SEEN = "rpc.seen"  # a request to another node: answered at once
SEEN_TIMEOUT = 1.0  # seconds a change waits at most for a node that does not answer


def answer_seen(bus: Any) -> None:
    """This node answers the other nodes' barriers."""
    bus.on(SEEN, lambda sender, body: True)


def seen_everywhere(redis: Any, bus: Any, node_id: str) -> defer.Deferred:
    """Fires (never fails) once every other live node has answered a message sent now."""
    def ask(ids: Any) -> defer.Deferred:
        others = sorted(i for i in ids if i != node_id)[:MAX_NODES]
        return defer.DeferredList([bus.request(n, SEEN, None, timeout=SEEN_TIMEOUT) for n in others],
                                  consumeErrors=True)

    return redis.smembers(NODES).addCallbacks(ask, lambda f: None)
