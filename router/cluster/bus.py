"""Messages between nodes over Redis pub/sub: a broadcast channel (`cy:bus:all`) every node listens
on, for events every node must see (a dead node's sessions leaving), and a channel per node
(`cy:bus:node:<id>`) for what only one node must act on (kill one of its sessions). A pub/sub
message is fire-and-forget: a node that is disconnected when it is sent does not get it (Redis
keeps nothing), which is why what must outlive a node lives in keys instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.logger import Logger

from router.cluster.connection import _endpoint
from router.cluster.url import RedisTarget

BROADCAST = "cy:bus:all"
KILL = "kill"  # to one node: {realm, sessions, reason, message}: say GOODBYE to these sessions of yours


def node_channel(node_id: str) -> str:
    return f"cy:bus:node:{node_id}"

MAX_MESSAGE = 8 * 1024 * 1024  # bytes; a larger broadcast is refused by the sender


class _Listener(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message) -> None:
        self.factory.bus.received(channel, message)


class Bus:
    log = Logger()

    def __init__(self, redis: Any, target: RedisTarget, node_id: str, timeout: float) -> None:
        self.redis = redis  # commands (PUBLISH) go over the node's connection
        self.target = target
        self.node_id = node_id
        self.timeout = timeout
        self._handlers: dict[str, Callable[[str, Any], None]] = {}
        self._factory: Any = None

    def on(self, kind: str, handler: Callable[[str, Any], None]) -> None:
        """Run `handler(sender_node_id, body)` for every broadcast of `kind`, ours included."""
        self._handlers[kind] = handler

    def start(self) -> defer.Deferred:
        """A subscriber connection of its own (Redis reserves a subscribed connection for messages),
        subscribing again after every reconnect."""
        factory = txredisapi.SubscriberFactory()
        factory.protocol = _Listener
        factory.bus = self
        factory.password, factory.username = self.target.password, self.target.username
        build = factory.buildProtocol

        def build_and_subscribe(addr):
            p = build(addr)
            p.whenConnected().addCallback(lambda proto: proto.subscribe([BROADCAST, node_channel(self.node_id)]))
            return p

        factory.buildProtocol = build_and_subscribe
        factory.startConnecting(_endpoint(self.target, self.timeout))
        self._factory = factory
        return factory.deferred

    def stop(self) -> defer.Deferred:
        return self._factory.disconnect() if self._factory is not None else defer.succeed(None)

    def broadcast(self, kind: str, body: Any) -> defer.Deferred:
        """To every node, this one included."""
        return self._publish(BROADCAST, kind, body)

    def send(self, node_id: str, kind: str, body: Any) -> defer.Deferred:
        """To one node: Deferred[int], how many listeners got it (0: that node is not listening)."""
        return self._publish(node_channel(node_id), kind, body)

    def _publish(self, channel: str, kind: str, body: Any) -> defer.Deferred:
        data = json.dumps({"from": self.node_id, "kind": kind, "body": body}, separators=(",", ":"))
        if len(data) > MAX_MESSAGE:
            return defer.fail(ValueError(f"bus message {kind} of {len(data)} bytes is over {MAX_MESSAGE}"))
        return self.redis.publish(channel, data)

    def received(self, channel: str, message: Any) -> None:
        try:
            msg = json.loads(message)
            handler = self._handlers.get(msg["kind"])
            if handler is not None:
                handler(msg["from"], msg["body"])
        except Exception:  # one bad message (a bug, or a foreign publisher): say so, keep listening
            self.log.failure("cluster broadcast on {channel} could not be handled", channel=channel)
