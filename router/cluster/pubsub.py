"""Pub/sub across nodes (issue 13, point 1): which other nodes have subscribers for what, and the
events that cross to them.

Each node owns its subscriptions. It records in Redis which (realm, match, topic) it has at least
one subscriber for (a set per node, `cy:subs:<node>`) and broadcasts each change, so every node
keeps the others' interest in memory (per realm, a PatternIndex of node-id sets). A PUBLISH is
delivered to local subscribers first, exactly as on one node; then, if other nodes have matching
subscriptions, each of them gets **one** bus message with the publication (id, publisher details,
payload, exclusions and black/whitelists), serialized once for all of them, and fans it out to its
own subscribers with the same rules. Nothing on this path waits on Redis: the interest is in memory,
and a PUBLISH to Redis is fire-and-forget. When Redis is away, or the bus is over its budget, the
cross-node copy is dropped and counted (`dropped`); local subscribers still get their events.

Subscription ids are the same on every node: a hash of (realm, match, topic), so the meta API and
the SUBSCRIBED ids agree wherever they are asked. Retained events live in Redis (a hash per realm,
bounded in count and bytes by a script), so a subscriber on any node gets the last one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet import defer
from twisted.logger import Logger

from router.broker import Receivers, Retained, pattern_matches
from router.cluster.barrier import seen_everywhere
from router.cluster.connection import connected, require
from router.cluster.membership import NODES
from router.cluster.outbox import TOO_LARGE, UNAVAILABLE, UNENCODABLE
from router.cluster.purge import NODE_KEYS
from router.matching import PatternIndex

SUB = "sub"  # broadcast: [realm, match, topic, 1 | 0]: the sender has (1) or no longer has (0) subscribers
SUBS_RESET = "subs_reset"  # broadcast: the sender re-wrote its whole set: re-read it
EVENT = "event"  # to one node: [realm, topic, publication, details, payload, exclude, receivers | None]
SUBSCRIBERS = "subscribers"  # request: [realm, match, topic] → that node's subscriber session ids
MAX_INTEREST = 1_000_000  # (realm, match, topic) entries read per node


_CAUSES = {UNAVAILABLE: "Redis is away", TOO_LARGE: "an event is larger than the bus carries (outbox.MAX_ITEM_BYTES)",
           UNENCODABLE: "an event holds a value the bus cannot carry",
           "lost": "the bus refused them or nobody listened (Redis away, too much waiting for it, or a node gone)"}


def subs_key(node_id: str) -> str:
    return f"cy:subs:{node_id}"


def retained_key(realm: str) -> str:
    return f"cy:ret:{realm}"


def retained_order_key(realm: str) -> str:
    return f"cy:reto:{realm}"


NODE_KEYS.append(subs_key)

# KEYS: the realm's retained hash, its order zset. ARGV: topic, event (msgpack), size, now, max count,
# max bytes. Keeps the topic's latest event; forgets the topics retained longest ago past either bound.
_RETAIN = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then redis.call('HINCRBY', KEYS[1], '', -string.len(old)) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], '', tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
while redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[5])
      or tonumber(redis.call('HGET', KEYS[1], '')) > tonumber(ARGV[6]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  local gone = redis.call('HGET', KEYS[1], oldest)
  if gone then redis.call('HINCRBY', KEYS[1], '', -string.len(gone)) end
  redis.call('HDEL', KEYS[1], oldest)
  redis.call('ZREM', KEYS[2], oldest)
end
return 1
"""


def subscription_id(realm: str, match: str, topic: str) -> int:
    """The cluster-wide id of the subscription (realm, match, topic): in [1, 2^53], as the spec asks."""
    digest = hashlib.blake2b(f"{realm}\0{match}\0{topic}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % (2**53)) or 1


def _member(realm: str, match: str, topic: str) -> str:
    return json.dumps([realm, match, topic], separators=(",", ":"))


class RemoteInterest:
    """One realm's view of the other nodes' subscriptions, and its broker's door to them."""

    __slots__ = ("realm", "index", "patterns", "part", "seen")

    def __init__(self, realm: str, part: ClusterPubSub) -> None:
        self.realm = realm
        self.index: PatternIndex[dict[str, None]] = PatternIndex()  # (topic, match) → node ids
        self.patterns = 0  # prefix/wildcard entries: 0 keeps `wants` on one dict hit
        self.part = part
        self.seen: dict[int, tuple[str, str, float]] = {}  # subscription id → (match, topic, first seen)

    # -- the broker asks -------------------------------------------------------------------------
    def wants(self, topic: str) -> bool:
        return topic in self.index.exact or self.patterns > 0

    def forward(self, topic: str, publication: int, details: dict, payload: list, exclude: int | None,
                receivers: Any) -> str | None:
        """The publication to every other node with a matching subscription, once per node. None: on its
        way; else why it could not leave (outbox's causes), for a publisher that asked for acknowledge."""
        nodes: dict[str, None] = {}
        if self.patterns:
            for found in self.index.matches(topic):
                nodes.update(found)
        else:
            found = self.index.exact.get(topic)
            if found is None:
                return None
            nodes = found
        if nodes:
            lists = None if receivers is None else receivers.to_lists()
            return self.part.send_event(list(nodes), [self.realm, topic, publication, details, payload, exclude,
                                                      lists])
        return None

    def id_for(self, topic: str, match: str) -> int:
        return subscription_id(self.realm, match, topic)

    def created(self, topic: str, match: str) -> defer.Deferred:
        return self.part.interest_changed(self.realm, match, topic, True)

    def deleted(self, topic: str, match: str) -> defer.Deferred:
        return self.part.interest_changed(self.realm, match, topic, False)

    def retain(self, topic: str, event: Any, max_bytes: int, max_count: int) -> None:
        self.part.retain(self.realm, topic, event, max_bytes, max_count)

    def retained_for(self, sub: Any) -> defer.Deferred:
        return self.part.retained_for(self.realm, sub)

    def elsewhere(self, topic: str, match: str) -> bool:
        """Whether another node has subscribers for exactly this subscription."""
        return bool(self.index.get(topic, match))

    def others(self) -> dict[int, tuple[str, str, float]]:
        return self.seen

    def subscribers(self, topic: str, match: str) -> defer.Deferred:
        return self.part.subscribers(self.realm, match, topic)

    # -- the view --------------------------------------------------------------------------------
    def add(self, node: str, match: str, topic: str) -> None:
        nodes = self.index.get(topic, match)
        if nodes is None:
            nodes = {}
            self.index.add(topic, match, nodes)
            if match != "exact":
                self.patterns += 1
            self.seen[subscription_id(self.realm, match, topic)] = (match, topic, time.time())
        nodes[node] = None

    def remove(self, node: str, match: str, topic: str) -> None:
        nodes = self.index.get(topic, match)
        if nodes is None or node not in nodes:
            return
        del nodes[node]
        if not nodes:
            self.index.remove(topic, match)
            if match != "exact":
                self.patterns -= 1
            self.seen.pop(subscription_id(self.realm, match, topic), None)

    def nodes_of(self, topic: str, match: str) -> list[str]:
        return list(self.index.get(topic, match) or ())

    def matching(self, topic: str) -> list[int]:
        """Ids of the other nodes' subscriptions an event to `topic` would go to."""
        return [sid for sid, (match, t, _) in self.seen.items()
                if (match == "exact" and t == topic) or (match != "exact" and self.index.get(t, match) is not None
                                                         and pattern_matches(t, match, topic))]


class ClusterPubSub:
    """The pub/sub part of a cluster node (router/cluster/part.py)."""

    log = Logger()

    def __init__(self, redis: Any, bus: Any, node_id: str, running: Callable[[str], Any],
                 realms: Callable[[], dict[str, Any]]) -> None:
        """`running(uri)`: the running realm (RealmRouter) or None, never creating one; `realms()`: all of them."""
        self.bus = bus
        self.redis = redis
        self.me = node_id
        self.running = running
        self.running_realms = realms
        self.realms: dict[str, RemoteInterest] = {}
        self.by_node: dict[str, set[tuple[str, str, str]]] = {}  # node → its (realm, match, topic)
        self._absent: set[str] = set()  # nodes with interest here, absent from cy:nodes at the last reading
        self.sent = 0  # events sent to other nodes: one per publication and interested node
        self.dropped = 0  # events not sent to another node (Redis away, bus over budget, not encodable)
        self.dropped_by: dict[str, int] = {}  # ... per cause (_CAUSES)
        self._dropping: set[str] = set()  # causes logged in this episode (one line per cause, not per event)
        self.bus.on(SUB, self._sub)
        self.bus.on(SUBS_RESET, lambda sender, _: self._reload_node(sender))
        self.bus.outbox.on(EVENT, self._event)
        self.bus.on(SUBSCRIBERS, self._subscribers)

    def interest(self, realm: str) -> RemoteInterest:
        found = self.realms.get(realm)
        if found is None:
            found = self.realms[realm] = RemoteInterest(realm, self)
        return found

    # -- ClusterPart -----------------------------------------------------------------------------
    def start(self) -> defer.Deferred:
        return self._reload_all()

    def realm_started(self, router: Any) -> None:
        router.broker.backend = self.interest(router.uri)

    def node_down(self, node_id: str) -> None:
        for realm, match, topic in self.by_node.pop(node_id, ()):
            self.interest(realm).remove(node_id, match, topic)

    def resync(self) -> None:
        self._rewrite().addCallback(lambda _: self._reload_all()).addErrback(
            lambda f: self.log.warn("re-announcing this node's subscriptions failed: {e}", e=f.getErrorMessage()))

    def stop(self) -> defer.Deferred:
        return self.redis.delete(subs_key(self.me)) if connected(self.redis) else defer.succeed(None)

    # -- this node's subscriptions ---------------------------------------------------------------
    def interest_changed(self, realm: str, match: str, topic: str, present: bool) -> defer.Deferred:
        """A subscription got its first subscriber on this node, or lost its last: tell Redis and the
        other nodes; fires once Redis has passed it on (or failed to: never an error). Redis away:
        nothing now; `resync` re-writes the whole set when it is back."""
        if not connected(self.redis):
            return defer.succeed(None)
        member = _member(realm, match, topic)
        write = self.redis.sadd(subs_key(self.me), member) if present else self.redis.srem(subs_key(self.me), member)
        write.addErrback(lambda f: None)
        # Once every other node has applied it (not only once Redis passed it on): a PUBLISH or SUBSCRIBE
        # made next on any node sees the change.
        told = self.bus.broadcast(SUB, [realm, match, topic, 1 if present else 0])
        return told.addCallback(lambda _: seen_everywhere(self.redis, self.bus, self.me)).addErrback(lambda f: None)

    def _local(self) -> list[str]:
        found = []
        for uri, router in self.running_realms().items():
            for sub in router.broker.subscriptions():
                found.append(_member(uri, sub.match, sub.topic))
        return found

    @defer.inlineCallbacks
    def _rewrite(self):
        members = self._local()
        pipe = yield self.redis.multi()
        pipe.delete(subs_key(self.me))
        for i in range(0, len(members), 10_000):
            pipe.sadd(subs_key(self.me), members[i:i + 10_000])
        yield pipe.commit()
        yield self.bus.broadcast(SUBS_RESET, None)

    # -- the other nodes' subscriptions ----------------------------------------------------------
    def _sub(self, sender: str, body: list) -> None:
        if sender == self.me:
            return
        realm, match, topic, present = body
        view = self.interest(realm)
        mine = self.by_node.setdefault(sender, set())
        if present:
            view.add(sender, match, topic)
            mine.add((realm, match, topic))
        else:
            view.remove(sender, match, topic)
            mine.discard((realm, match, topic))

    @defer.inlineCallbacks
    def _reload_all(self):
        require(self.redis)
        nodes = [n for n in (yield self.redis.smembers(NODES)) if n != self.me]
        # Gone only if absent from two readings in a row: after Redis came back empty or failed over to
        # a replica that lacked the last writes, a live node is absent until its next heartbeat
        # re-announces it, and dropping its interest meanwhile would drop events silently. (NODE_DOWN is
        # the prompt way out for a node that did die.)
        absent = set(self.by_node) - set(nodes)
        for gone in absent & self._absent:
            self.node_down(gone)
        self._absent = absent
        for node_id in sorted(nodes)[:1000]:
            yield self._reload_node(node_id)

    @defer.inlineCallbacks
    def _reload_node(self, node_id: str):
        if node_id == self.me:
            return
        members = yield self.redis.smembers(subs_key(node_id))
        self.node_down(node_id)
        mine = self.by_node.setdefault(node_id, set())
        for member in list(members)[:MAX_INTEREST]:
            realm, match, topic = json.loads(member)
            self.interest(realm).add(node_id, match, topic)
            mine.add((realm, match, topic))

    # -- events ----------------------------------------------------------------------------------
    def send_event(self, nodes: list[str], body: list) -> str | None:
        """None: queued for every node; else why not (outbox UNAVAILABLE, TOO_LARGE, UNENCODABLE)."""
        self.sent += len(nodes)
        outbox = self.bus.outbox
        if not outbox.send_many(nodes, EVENT, body, self._lost):
            refused, outbox.refused = outbox.refused, None
            for _ in nodes:
                self._not_sent(refused or "lost")
            return refused or "lost"
        return None

    def _lost(self) -> None:
        self._not_sent("lost")

    def _not_sent(self, cause: str) -> None:
        """One event not sent to one node, counted per cause; one log line per cause and episode."""
        self.dropped += 1
        self.dropped_by[cause] = self.dropped_by.get(cause, 0) + 1
        if cause not in self._dropping:
            self._dropping.add(cause)
            self.log.warn("events to other nodes are being dropped: {why}", why=_CAUSES.get(cause, cause))

    def _event(self, sender: str, body: list) -> None:
        self._dropping.clear()
        realm, topic, publication, details, payload, exclude, lists = body
        router = self.running(realm)
        if router is not None:
            router.broker.deliver_remote(topic, publication, details, payload, exclude, lists)

    # -- retained events -------------------------------------------------------------------------
    def retain(self, realm: str, topic: str, event: Any, max_bytes: int, max_count: int) -> None:
        """The realm's latest retained event on `topic`, in Redis for every node; past the realm's
        bounds the topics retained longest ago are forgotten (the same bounds as on one node)."""
        if not connected(self.redis):
            return
        lists = None if event.receivers is None else event.receivers.to_lists()
        try:
            packed = msgpack.packb([event.publication, event.details, event.payload, event.exclude, lists],
                                   use_bin_type=True)
        except Exception:  # not representable in msgpack: retained on this node only
            return
        self.redis.eval(_RETAIN, [retained_key(realm), retained_order_key(realm)],
                        [topic, packed, len(packed), time.time(), max_count, max_bytes]).addErrback(
            lambda f: self.log.warn("retaining an event in Redis failed: {e}", e=f.getErrorMessage()))

    @defer.inlineCallbacks
    def retained_for(self, realm: str, sub: Any):
        """[(topic, Retained)] for a new subscription, from Redis (ClusterUnavailable while it is away:
        the broker then sends what this node retained itself)."""
        require(self.redis)
        if sub.match == "exact":
            value = yield self.redis.hget(retained_key(realm), sub.topic)
            found = [(sub.topic, value)] if value is not None else []
        else:  # every matching topic, retained longest ago first (as on one node)
            topics = yield self.redis.zrange(retained_order_key(realm), 0, -1)
            topics = [t for t in topics if pattern_matches(sub.topic, sub.match, t)]
            values = (yield self.redis.hmget(retained_key(realm), topics)) if topics else []
            found = [(t, v) for t, v in zip(topics, values, strict=True) if v is not None]
        events = []
        for topic, value in found:
            # The connection decodes replies as UTF-8 where they are: encoding gives the bytes back.
            raw = value.encode() if type(value) is str else value
            publication, details, payload, exclude, lists = msgpack.unpackb(raw, raw=False)
            events.append((topic, Retained(publication, details, payload, exclude, Receivers.from_lists(lists))))
        return events

    def _subscribers(self, sender: str, body: list) -> list[int]:
        realm, match, topic = body
        router = self.running(realm)
        sub = router.broker.lookup(topic, match) if router is not None else None
        return list(sub.subscribers) if sub is not None else []

    def subscribers(self, realm: str, match: str, topic: str) -> defer.Deferred:
        """Deferred[list[int]]: the subscriber session ids other nodes have for this subscription."""
        nodes = self.interest(realm).nodes_of(topic, match)
        asks = [self.bus.request(n, SUBSCRIBERS, [realm, match, topic]) for n in nodes]
        return defer.gatherResults(asks, consumeErrors=True).addCallback(
            lambda lists: [sid for found in lists for sid in found])
