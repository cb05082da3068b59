"""Which nodes are alive: each node keeps a key `cy:node:<id>` in Redis that expires `node_timeout`
after its last heartbeat, so a node that dies (kill -9, power loss, network cut) drops out by itself,
without anyone having to notice. `cy:nodes` remembers every node id that announced itself, so a
survivor can find the dead ones (their key gone, their id still there) and purge what they left.

The heartbeat is also how the node notices Redis going and coming back: one log line each way, and
on return the node re-announces itself and re-writes its session records (Redis may have restarted
empty), idempotently.

Fencing (a node stalled or cut off past `node_timeout` is purged by the others, purge.py): each run of
a node is an *incarnation* (a random token, `cy:inc:<id>`); the purge leaves a tombstone
`cy:fenced:<id>` naming the incarnation it purged, for FENCE_TTL. A node whose key has expired
re-announces itself with one script that first looks for that tombstone, so it tells "I was purged"
(tombstone of its incarnation: `on_fenced`, its sessions are closed, it joins again as a new
incarnation) from "Redis lost its data" (no tombstone: it re-writes its state, nobody is closed). The
purge's claim and this script each run atomically in Redis, and the claim requires the key to be
gone: either the purge comes first and the node learns it, or the node is back first and no purge
happens.

A node cannot tell by itself a Redis outage (everyone's renewals fail, nobody is purged) from being
cut off alone (the others purge it), so it never closes sessions on its own clock: that would turn
every Redis outage into a cluster-wide disconnect. What it does on its own clock: from the moment
its key may have expired (`stale`: no renewal acknowledged for node_timeout) it holds what the bus
brings until Redis has said whether it is still a member, so nothing reaches a session that the
cluster may have reported as left.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from router.cluster.connection import connected, link, require

NODES = "cy:nodes"
MAX_NODES = 1000  # node ids listed at most
FENCE_TTL = 24 * 3600  # seconds a purge's tombstone is kept: longer than any stall or partition we expect
FENCED = "courtyard.close.node_fenced"  # GOODBYE reason: this node was purged while its sessions lived on


def node_key(node_id: str) -> str:
    return f"cy:node:{node_id}"


def incarnation_key(node_id: str) -> str:
    """The incarnation now announced under a node id (no expiry: the purge reads it once the key is gone)."""
    return f"cy:inc:{node_id}"


def fence_key(node_id: str) -> str:
    """The tombstone a purge leaves: the incarnation it purged."""
    return f"cy:fenced:{node_id}"


def new_incarnation() -> str:
    return secrets.token_hex(8)


# KEYS: the node's key, cy:nodes, its incarnation key, its tombstone. ARGV: node id, announcement, TTL
# in ms, incarnation. 0: this incarnation was purged (nothing written); 1: announced.
_ANNOUNCE = """
if redis.call('GET', KEYS[4]) == ARGV[4] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[4])
return 1
"""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Membership:
    log = Logger()

    def __init__(self, redis: Any, node_id: str, address: str, heartbeat: float, node_timeout: float,
                 sessions: Callable[[], int], redis_name: str, on_back: Callable[[], None],
                 purger: Any = None, on_fenced: Callable[[], None] = lambda: None,
                 on_member: Callable[[], None] = lambda: None, shards: tuple[str, ...] = ()) -> None:
        self.redis = redis
        self.shards = list(shards)  # cluster.redis as shown (passwords masked): every node must list the same
        self.node_id = node_id
        self.address = address
        self.heartbeat = heartbeat
        self.node_timeout = node_timeout
        self.sessions = sessions  # this node's session count, for the announcement
        self.redis_name = redis_name  # the URL, password masked, for the log lines
        self.on_back = on_back  # Redis is back after an outage: re-write local state
        self.purger = purger  # looks for dead nodes after each heartbeat (purge.py)
        self.on_fenced = on_fenced  # this incarnation was purged: close its sessions (before re-joining)
        self.on_member = on_member  # Redis has just confirmed this node is a member (the bus may deliver)
        self.incarnation = new_incarnation()
        self.fenced = 0  # times this node learnt it had been purged
        self._renewed_at = time.monotonic()  # when the last acknowledged renewal was sent
        self._back_at: float | None = None  # when Redis came back after an outage (purges wait a while)
        self._announced = False
        self._link: Any = None  # the connection's socket at the last beat (connection.link)
        self._resync = False  # this beat found the key gone: everything of this node is written again
        self._purging = False
        self.started = time.time()
        self.last_heartbeat: float | None = None
        self.up = True
        self._beating: defer.Deferred | None = None
        self._loop = task.LoopingCall(self.beat)
        self._watch = task.LoopingCall(self._watch_connection)  # while Redis is away: beat once it is back

    def start(self) -> defer.Deferred:
        """Announce this node now, then renew every `heartbeat` seconds."""
        d = self.beat()
        self._loop.start(self.heartbeat, now=False)
        return d

    def announcement(self) -> dict:
        return {"id": self.node_id, "address": self.address, "sessions": self.sessions(),
                "started": _iso(self.started), "heartbeat": _iso(time.time()), "shards": self.shards}

    def stale(self) -> bool:
        """True once no renewal has been acknowledged for node_timeout: this node's key may have expired
        and the others may have purged it (cheap: the bus asks on every message)."""
        return time.monotonic() - self._renewed_at > self.node_timeout

    def stale_for(self) -> float:
        """Seconds since this node's key may have expired (0 if it cannot have)."""
        return max(0.0, time.monotonic() - self._renewed_at - self.node_timeout)

    def beat(self) -> defer.Deferred:
        if self._beating is not None:  # the last one has not come back: Redis is slow, skip this one
            return self._beating
        if not connected(self.redis):
            self._lost("the connection is down")
            return defer.succeed(None)
        current = link(self.redis)
        if self._link is not None and current is not self._link:  # back before this beat saw it go
            self._lost("the connection was lost and re-established")
        self._link = current
        sent = time.monotonic()
        self._beating = self._renew()
        self._beating.addCallback(self._acknowledged, sent)
        self._beating.addBoth(self._beaten)
        return self._beating

    @defer.inlineCallbacks
    def _renew(self):
        """SET the key; after the first time only if it still exists (XX). If it had expired, this node
        was taken for dead (stalled, Redis slow or cut off for node_timeout) or Redis lost its data:
        the announcement script tells which (see above)."""
        ttl = int(self.node_timeout * 1000)
        if self._announced:
            value = json.dumps(self.announcement())
            renewed = yield self.redis.set(node_key(self.node_id), value, pexpire=ttl, only_if_exists=True)
            if renewed:
                return
        if (yield self._announce(ttl)):
            if self._announced:
                if self.up:  # after an outage, _beaten says so and re-writes
                    self.log.warn("this node's key had expired, and no purge of it is recorded (Redis lost "
                                  "its data, or nobody purged it yet): re-announcing it and its sessions")
                self._resync = True
            self._announced = True
            return
        self.fenced += 1
        old, self.incarnation = self.incarnation, new_incarnation()
        self.log.warn("this node was purged by the cluster (incarnation {old}): closing its sessions "
                      "({reason}) and joining again as incarnation {new}", old=old, reason=FENCED, new=self.incarnation)
        self.on_fenced()
        if not (yield self._announce(ttl)):  # a new incarnation has no tombstone: cannot happen
            raise RuntimeError("a fresh incarnation was refused")
        self._resync = True

    def _announce(self, ttl: int) -> defer.Deferred:
        """Deferred[bool]: announced (True), or this incarnation was purged (False, nothing written)."""
        return self.redis.execute_command(
            "EVAL", _ANNOUNCE, 4, node_key(self.node_id), NODES, incarnation_key(self.node_id),
            fence_key(self.node_id), self.node_id, json.dumps(self.announcement()), ttl,
            self.incarnation).addCallback(lambda r: r == 1)

    def _acknowledged(self, result: Any, sent: float) -> Any:
        self._renewed_at = sent
        self.on_member()
        return result

    def _beaten(self, result: Any) -> None:
        self._beating = None
        if isinstance(result, Failure):
            self._lost(result.getErrorMessage())
            return None
        self.last_heartbeat = time.time()
        resync, self._resync = self._resync, False
        if not self.up:
            self.up = resync = True
            self._back_at = time.monotonic()
            if self._watch.running:
                self._watch.stop()
            self.log.info("Redis at {url} is back: re-announcing this node and its sessions", url=self.redis_name)
        if resync:
            self.on_back()
        if self._back_at is not None and time.monotonic() - self._back_at < self.node_timeout + self.heartbeat:
            return None  # just back: the others have not re-announced yet, and must not be taken for dead
        if self.purger is not None and not self._purging:
            self._purging = True
            self.purger.sweep().addErrback(self._purge_failed).addBoth(self._purged)
        return None

    def _purge_failed(self, failure: Failure) -> None:
        self.log.warn("looking for dead nodes failed: {e}", e=failure.getErrorMessage())

    def _purged(self, _: Any) -> None:
        self._purging = False

    def _lost(self, why: str) -> None:
        self._announced = False  # once back, announce in full (key and NODES): Redis may have lost either
        if self.up:
            self.up = False
            self.log.warn("lost Redis at {url} ({why}): serving this node's sessions, cluster state paused",
                          url=self.redis_name, why=why)
        if not self._watch.running and self._loop.running:
            self._watch.start(0.05, now=False)

    def _watch_connection(self) -> None:
        """Beat as soon as the connection is back, not at the next heartbeat: recovery starts at once.
        (The watch stops in `_beaten`, once a beat has gone through.)"""
        if connected(self.redis) and self._beating is None:
            self.beat()

    @defer.inlineCallbacks
    def stop(self):
        """Leave the cluster: stop beating and remove this node's key (a graceful stop is no death)."""
        if self._loop.running:
            self._loop.stop()
        if self._watch.running:
            self._watch.stop()
        if connected(self.redis):
            yield self.redis.delete([node_key(self.node_id), incarnation_key(self.node_id)])
            yield self.redis.srem(NODES, [self.node_id])

    def list_nodes(self) -> defer.Deferred:
        """Every live node's announcement, by id (at most MAX_NODES)."""
        return live_nodes(self.redis)


@defer.inlineCallbacks
def live_nodes(redis: Any):
    """Every live node's announcement, by id (at most MAX_NODES)."""
    require(redis)
    ids = sorted((yield redis.smembers(NODES)))[:MAX_NODES]
    if not ids:
        return []
    values = yield redis.mget([node_key(i) for i in ids])
    return [json.loads(v) for v in values if v is not None]
