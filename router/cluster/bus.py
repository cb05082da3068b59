"""Messages between nodes over Redis pub/sub: a broadcast channel (`cy:bus:all`) every node listens
on, for what every node must see (a dead node's sessions leaving, a new subscription's interest),
and a channel per node (`cy:bus:node:<id>`) for what only one node must act on (an event for its
subscribers, a call for its callee, a kill of one of its sessions).

Why pub/sub and not streams: what crosses nodes is routing (events, calls, answers), which is worth
nothing once its node is gone, so nothing should be kept for a node that is not listening; Redis
pub/sub keeps nothing, costs one PUBLISH per message, and Redis bounds a slow listener itself
(`client-output-buffer-limit pubsub`, 32 MiB by default: past it Redis drops that listener, which
reconnects and resyncs). What must outlive a node lives in keys instead.

A message is msgpack `[sender, kind, body]`: binary payloads cross as bytes whatever the clients'
serializers, and each payload is serialized once per message, not once per receiver.

Bounded on the sending side too: nothing is queued while Redis is away (txredisapi would hold every
command until it is back), and at most `MAX_INFLIGHT_BYTES` of messages wait for Redis's answer;
past either, `send` fails at once with ClusterUnavailable and the caller decides (an event is
dropped, a call fails with `wamp.error.canceled`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import msgpack
import txredisapi
from twisted.internet import defer, reactor
from twisted.logger import Logger

from router import wamp
from router.cluster.connection import (
    ClusterUnavailable,
    _endpoint,
    connected,
    drop_connections,
    fast_reconnect,
    follow_failovers,
)
from router.cluster.limits import MAX_MESSAGE
from router.cluster.outbox import Outbox
from router.cluster.url import RedisTarget
from router.metrics import ClusterStats

BROADCAST = "cy:bus:all"
KILL = "kill"  # to one node: {realm, sessions, reason, message}: say GOODBYE to these sessions of yours
REPLY = "reply"  # the answer to a `request`: [request id, error URI or None, value]


def node_channel(node_id: str) -> str:
    return f"cy:bus:node:{node_id}"


def data_channel(node_id: str) -> str:
    """What the outbox sends a node (events, calls, answers): on that node's shard."""
    return f"cy:bus:data:{node_id}"


def shard_of(node_id: str, shards: int) -> int:
    """The shard of a node's data channel: a stable hash of its id, the same on every node."""
    return int.from_bytes(hashlib.sha1(node_id.encode()).digest()[:8], "big") % shards


MAX_INFLIGHT_BYTES = 64 * 1024 * 1024  # sent to Redis, not yet acknowledged by it
MAX_REQUESTS = 10_000  # requests to other nodes waiting for their answer
MAX_HELD = 100_000  # messages held while this node may have been purged; past it they are lost (resync)


class _Listener(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message) -> None:
        self.factory.bus.received(channel, message)


class Bus:
    log = Logger()

    def __init__(self, redis: Any, target: RedisTarget, node_id: str, timeout: float,
                 shards: list[tuple[Any, RedisTarget]] | None = None) -> None:
        """`redis`, `target`: the home shard (the control plane); `shards`: the other shards'
        connections and targets, over which every node's data channel is spread (`shard_of`)."""
        self.redis = redis  # commands (PUBLISH) go over the node's connection
        self.target = target
        self.node_id = node_id
        self.timeout = timeout
        self.shards: list[tuple[Any, RedisTarget]] = [(redis, target), *(shards or ())]
        self.home_of_data = shard_of(node_id, len(self.shards))  # where this node's data channel is
        self._handlers: dict[str, Callable[[str, Any], Any]] = {}
        self._factories: list[Any] = []  # subscriber connections: the home shard's, then the data shard's
        self._listened: list[bool] = []
        self.inflight = 0  # bytes published and not yet acknowledged by Redis
        self._requests: dict[int, defer.Deferred] = {}
        self._ids = itertools.count(1)
        self._listening: defer.Deferred | None = None  # Bus.start's, until the first SUBSCRIBE is answered
        self.resubscribed: Callable[[], None] | None = None  # told when listening again after a reconnect
        # Membership's: True while this node may have been purged (no renewal acknowledged for
        # node_timeout). What arrives meanwhile is held until Redis says (`release`), so that a node
        # waking from a stall delivers nothing to sessions the cluster may have reported as left.
        self.stale: Callable[[], bool] | None = None
        self._held: list[tuple[Any, Any]] | None = None
        self._held_lost = False
        self.on(REPLY, self._replied)
        self.stats = ClusterStats()  # messages and bytes per peer node, for /metrics (router.metrics)
        self.outbox = Outbox(self, redis)  # what one reactor turn has for a node, as one message

    def on(self, kind: str, handler: Callable[[str, Any], Any]) -> None:
        """Run `handler(sender_node_id, body)` for every message of `kind` to this node or to all (ours
        included). For a `request`, what it returns (a value or a Deferred) is the answer."""
        self._handlers[kind] = handler

    def start(self) -> defer.Deferred:
        """Subscriber connections of its own (Redis reserves a subscribed connection for messages): on
        the home shard for the broadcasts and this node's control channel, and on this node's data
        shard for its data channel (the same connection when that is the home shard), each subscribing
        again after every reconnect. Fires once all listen (their first SUBSCRIBE answered), so that
        nothing sent to this node right after is lost."""
        home = [BROADCAST, node_channel(self.node_id)]
        data = [data_channel(self.node_id)]
        if self.home_of_data == 0:
            plan = [(self.target, home + data)]
        else:
            plan = [(self.target, home), (self.shards[self.home_of_data][1], data)]
        self._listening = defer.Deferred()
        started = [self._subscriber(i, target, channels) for i, (target, channels) in enumerate(plan)]
        return defer.gatherResults(started, consumeErrors=True).addCallback(lambda _: self._listening)

    def _subscriber(self, index: int, target: RedisTarget, channels: list[str]) -> defer.Deferred:
        factory = fast_reconnect(txredisapi.SubscriberFactory())
        factory.protocol = _Listener
        factory.bus = self
        factory.charset = None  # messages are msgpack: bytes, never decoded as text
        factory.convertNumbers = False
        factory.password, factory.username = target.password, target.username
        build = factory.buildProtocol

        def build_and_subscribe(addr):
            p = build(addr)
            p.whenConnected().addCallback(lambda proto: proto.subscribe(channels)).addCallbacks(
                lambda _: self._subscribed(index), lambda f: None)  # gone before it answered: the next one does
            return p

        factory.buildProtocol = build_and_subscribe
        follow_failovers(factory, target)
        factory.startConnecting(_endpoint(target, self.timeout))
        self._factories.append(factory)
        self._listened.append(False)
        return factory.deferred

    def listening(self) -> bool:
        """Whether the bus's own subscriber connections are up (not that messages cross: the probe says that)."""
        return bool(self._factories) and all(f.size for f in self._factories)

    def subscriber_link(self) -> Any:
        """The subscribers' sockets now, or None if one is down (others than before: one reconnected)."""
        links = tuple(f.pool[0] if f.pool else None for f in self._factories)
        return None if not links or None in links else links

    def drop_subscriber(self) -> int:
        """Abort the subscriber connections so that they connect and subscribe anew; how many were dropped."""
        return sum(drop_connections(f) for f in self._factories)

    def _subscribed(self, index: int) -> None:
        """Listening (again). After a reconnect, what was broadcast meanwhile is lost: `resubscribed`
        re-reads the cluster's state, now that later changes will be heard."""
        first = not any(self._listened)
        if self._listened[index] and self.resubscribed is not None:
            self.log.info("listening to the cluster's bus again: re-reading the cluster's state")
            self.resubscribed()
        elif first:
            self.check_redis_limits()
        self._listened[index] = True
        listening = self._listening
        if all(self._listened) and listening is not None:
            self._listening = None
            if not listening.called:
                listening.callback(None)

    def check_redis_limits(self) -> defer.Deferred:
        """One warning when Redis would drop a node's bus connection for less than this node may send it
        at once: its `client-output-buffer-limit pubsub` hard limit under MAX_INFLIGHT_BYTES (a burst of
        large events then loses every event in flight to that node, silently, and it re-reads the cluster).
        Fires with the hard limit in bytes (0: none; None: not readable, e.g. CONFIG disabled)."""
        def read(reply: Any) -> int | None:
            limit = pubsub_hard_limit(reply)
            if limit and limit < MAX_INFLIGHT_BYTES:
                self.log.warn("Redis's client-output-buffer-limit for pubsub is {mib:g} MiB, under the {max} MiB "
                              "a node may send another at once: a burst of large events can make Redis drop a "
                              "node's bus connection (its events lost). Raise it, e.g. CONFIG SET "
                              "client-output-buffer-limit \"pubsub 256mb 64mb 60\"", mib=limit / 2**20,
                              max=MAX_INFLIGHT_BYTES // 2**20)
            return limit

        return self.redis.execute_command("CONFIG", "GET", "client-output-buffer-limit").addCallbacks(
            read, lambda f: None)

    def stop(self) -> defer.Deferred:
        for d in list(self._requests.values()):
            d.errback(ClusterUnavailable())
        return defer.gatherResults([f.disconnect() for f in self._factories])

    def broadcast(self, kind: str, body: Any) -> defer.Deferred:
        """To every node, this one included."""
        return self._publish(BROADCAST, kind, body)

    def send(self, node_id: str, kind: str, body: Any) -> defer.Deferred:
        """To one node: Deferred[int], how many listeners got it (0: that node is not listening)."""
        return self._publish(node_channel(node_id), kind, body)

    def send_data(self, node_id: str, kind: str, body: Any) -> defer.Deferred:
        """To one node's data channel, on its shard (the outbox's batches): as `send`. Ordered with
        the other data sent to that node, not with the control messages (`send`, `broadcast`)."""
        return self._publish(data_channel(node_id), kind, body, self._data_conn(node_id))

    def reaches(self, node_id: str) -> bool:
        """Whether the shard of `node_id`'s data channel is connected now."""
        return connected(self._data_conn(node_id))

    def _data_conn(self, node_id: str) -> Any:
        shards = self.shards
        return shards[0][0] if len(shards) == 1 else shards[shard_of(node_id, len(shards))][0]

    def request(self, node_id: str, kind: str, body: Any, timeout: float | None = None) -> defer.Deferred:
        """Ask one node: Deferred of its handler's answer; fails with ClusterUnavailable when it does not
        answer within `timeout` (default: the cluster's timeout), or with the handler's error."""
        if len(self._requests) >= MAX_REQUESTS:
            return defer.fail(ClusterUnavailable())
        rid = next(self._ids)
        d = defer.Deferred(lambda _: self._requests.pop(rid, None))
        self._requests[rid] = d
        d.addTimeout(self.timeout if timeout is None else timeout, reactor,
                     onTimeoutCancel=lambda result, t: _unavailable())
        d.addBoth(self._done_request, rid)
        sent = self._publish(node_channel(node_id), kind, {"rid": rid, "body": body})
        sent.addCallbacks(lambda n: n or (not d.called and d.errback(ClusterUnavailable())),
                          lambda f: (not d.called and d.errback(f)))
        return d

    def _done_request(self, result: Any, rid: int) -> Any:
        self._requests.pop(rid, None)
        return result

    def _replied(self, sender: str, body: list) -> None:
        rid, uri, value = body
        d = self._requests.pop(rid, None)
        if d is None or d.called:
            return  # timed out already
        if uri is None:
            d.callback(value)
        else:
            d.errback(RemoteError(uri, value))

    def _publish(self, channel: str, kind: str, body: Any, conn: Any = None) -> defer.Deferred:
        try:
            data = msgpack.packb([self.node_id, kind, body], use_bin_type=True)
        except Exception as e:  # not representable (an int past 64 bits)
            return defer.fail(ValueError(f"bus message {kind} cannot be written: {e}"))
        conn = self.redis if conn is None else conn
        if not connected(conn):
            return defer.fail(ClusterUnavailable())
        size = len(data)
        if size > MAX_MESSAGE:
            return defer.fail(ValueError(f"bus message {kind} of {size} bytes is over {MAX_MESSAGE}"))
        if self.inflight + size > MAX_INFLIGHT_BYTES:
            return defer.fail(ClusterUnavailable())
        self.inflight += size
        self.stats.sent("all" if channel == BROADCAST else channel.rpartition(":")[2], size)  # ids have no ':'

        def acknowledged(result: Any) -> Any:
            self.inflight -= size
            return result

        return conn.publish(channel, data).addBoth(acknowledged)

    def received(self, channel: Any, message: Any) -> None:
        if self._held is not None or (self.stale is not None and self.stale()):
            self._hold(channel, message)
            return
        self._handle(channel, message)

    def _hold(self, channel: Any, message: Any) -> None:
        if self._held is None:
            self._held = []
            self.log.info("this node may have been taken for dead: holding the cluster's messages until "
                          "Redis confirms it is a member")
        if len(self._held) < MAX_HELD:
            self._held.append((channel, message))
        else:
            self._held_lost = True

    def held(self) -> int:
        return len(self._held) if self._held is not None else 0

    def release(self, drop: bool = False) -> None:
        """This node is a member (again): handle what was held, in order; `drop`: this node was purged
        and its sessions are closed, so what was held was for them (the parts re-read the cluster)."""
        held, self._held = self._held, None
        if held is None:
            return
        lost, self._held_lost = self._held_lost, False
        if drop:
            self.log.info("dropped {n} cluster message(s) held for this node's purged sessions", n=len(held))
            return
        for channel, message in held:
            self._handle(channel, message)
        if lost and self.resubscribed is not None:  # as after a reconnect: what was missed is re-read
            self.log.warn("more than {n} cluster messages arrived while held: re-reading the cluster's state",
                          n=MAX_HELD)
            self.resubscribed()

    def _handle(self, channel: Any, message: Any) -> None:
        try:
            sender, kind, body = msgpack.unpackb(message, raw=False, strict_map_key=False)
            self.stats.received(sender, len(message))
            handler = self._handlers.get(kind)
            if handler is None:
                return
            if type(body) is dict and "rid" in body and kind != REPLY:
                self._answer(sender, kind, body["rid"], handler, body["body"])
            else:
                handler(sender, body)
        except Exception:  # one bad message (a bug, or a foreign publisher): say so, keep listening
            self.log.failure("cluster bus message on {channel} could not be handled", channel=channel)

    def _answer(self, sender: str, kind: str, rid: int, handler: Callable, body: Any) -> None:
        def reply(value: Any) -> None:
            self.send(sender, REPLY, [rid, None, value]).addErrback(lambda f: None)

        def fail(f: Any) -> None:
            uri = getattr(f.value, "uri", None)
            if uri is None:
                self.log.failure("answering {kind} for node {node} failed", failure=f, kind=kind, node=sender)
                uri, message = "wamp.error.runtime_error", "the other node failed; see its log"
            else:
                message = getattr(f.value, "message", str(f.value))
            self.send(sender, REPLY, [rid, uri, message]).addErrback(lambda f: None)

        defer.maybeDeferred(handler, sender, body).addCallbacks(reply, fail)


def pubsub_hard_limit(reply: Any) -> int | None:
    """The pubsub class's hard limit in bytes from CONFIG GET client-output-buffer-limit's reply."""
    try:
        value = reply[1] if isinstance(reply, list) else reply
        words = (value.decode() if isinstance(value, bytes) else str(value)).split()
        return _bytes(words[words.index("pubsub") + 1])
    except (ValueError, IndexError, TypeError):
        return None


def _bytes(text: str) -> int:
    units = {"kb": 1024, "k": 1000, "mb": 1024**2, "m": 1000**2, "gb": 1024**3, "g": 1000**3}  # Redis's units
    for suffix in ("kb", "mb", "gb", "k", "m", "g"):
        if text.lower().endswith(suffix):
            return int(text[:-len(suffix)]) * units[suffix]
    return int(text)


class RemoteError(wamp.WampError):
    """Another node answered a request with an error (its WAMP error URI and message)."""

    def __init__(self, uri: str, message: Any) -> None:
        super().__init__(uri, message if type(message) is str else str(message))


def _unavailable() -> None:
    raise ClusterUnavailable()
