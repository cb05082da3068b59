"""Which nodes are alive: each node keeps a key `cy:node:<id>` in Redis that expires `node_timeout`
after its last heartbeat, so a node that dies (kill -9, power loss, network cut) drops out by itself,
without anyone having to notice. `cy:nodes` remembers every node id that announced itself, so a
survivor can find the dead ones (their key gone, their id still there) and purge what they left.

The heartbeat is also how the node notices Redis going and coming back: one log line each way, and
on return the node re-announces itself and re-writes its session records (Redis may have restarted
empty), idempotently.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from router.cluster.connection import connected, require

NODES = "cy:nodes"
MAX_NODES = 1000  # node ids listed at most


def node_key(node_id: str) -> str:
    return f"cy:node:{node_id}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Membership:
    log = Logger()

    def __init__(self, redis: Any, node_id: str, address: str, heartbeat: float, node_timeout: float,
                 sessions: Callable[[], int], redis_name: str, on_back: Callable[[], None],
                 purger: Any = None) -> None:
        self.redis = redis
        self.node_id = node_id
        self.address = address
        self.heartbeat = heartbeat
        self.node_timeout = node_timeout
        self.sessions = sessions  # this node's session count, for the announcement
        self.redis_name = redis_name  # the URL, password masked, for the log lines
        self.on_back = on_back  # Redis is back after an outage: re-write local state
        self.purger = purger  # looks for dead nodes after each heartbeat (purge.py)
        self._announced = False
        self._purging = False
        self.started = time.time()
        self.last_heartbeat: float | None = None
        self.up = True
        self._beating: defer.Deferred | None = None
        self._settling: Any = None
        self._loop = task.LoopingCall(self.beat)

    def start(self) -> defer.Deferred:
        """Announce this node now, then renew every `heartbeat` seconds."""
        d = self.beat()
        self._loop.start(self.heartbeat, now=False)
        return d

    def announcement(self) -> dict:
        return {"id": self.node_id, "address": self.address, "sessions": self.sessions(),
                "started": _iso(self.started), "heartbeat": _iso(time.time())}

    def beat(self) -> defer.Deferred:
        if self._beating is not None:  # the last one has not come back: Redis is slow, skip this one
            return self._beating
        if not connected(self.redis):
            self._lost("the connection is down")
            return defer.succeed(None)
        self._beating = self._renew()
        self._beating.addBoth(self._beaten)
        return self._beating

    @defer.inlineCallbacks
    def _renew(self):
        """SET the key; after the first time only if it still exists (XX): if it had expired, this
        node was taken for dead (Redis slow or cut off for node_timeout) and its sessions may have been
        purged, so it announces itself anew and re-writes them."""
        ttl = int(self.node_timeout * 1000)
        value = json.dumps(self.announcement())
        if self._announced:
            renewed = yield self.redis.set(node_key(self.node_id), value, pexpire=ttl, only_if_exists=True)
            if renewed:
                return
            self.log.warn("this node's key had expired (taken for dead): re-announcing it and its sessions")
            self.on_back()
        pipe = yield self.redis.pipeline()
        pipe.set(node_key(self.node_id), value, pexpire=ttl)
        pipe.sadd(NODES, [self.node_id])
        yield pipe.execute_pipeline()
        self._announced = True

    def _beaten(self, result: Any) -> None:
        self._beating = None
        if isinstance(result, Failure):
            self._lost(result.getErrorMessage())
            return None
        self.last_heartbeat = time.time()
        if not self.up:
            self.up = True
            self.log.info("Redis at {url} is back: re-announcing this node and its sessions", url=self.redis_name)
            self.on_back()
            self._settle()
        if self.purger is not None and not self._purging:
            self._purging = True
            self.purger.sweep().addErrback(self._purge_failed).addBoth(self._purged)
        return None

    def _purge_failed(self, failure: Failure) -> None:
        self.log.warn("looking for dead nodes failed: {e}", e=failure.getErrorMessage())

    def _purged(self, _: Any) -> None:
        self._purging = False

    def _settle(self) -> None:
        """Once more when every node has had a heartbeat to re-announce itself: a node that re-read the
        cluster before another re-wrote its part (Redis came back empty, or failed over to a replica
        that lacked the last writes) could take it for gone; the second reading sees everyone."""
        if self._settling is None or not self._settling.active():
            self._settling = reactor.callLater(2 * self.heartbeat + 1.0, self._settled)

    def _settled(self) -> None:
        if self.up and self._loop.running:
            self.log.info("re-reading the cluster's state once more, now that every node has re-announced itself")
            self.on_back()

    def reconnected(self) -> None:
        """The connection came back, perhaps between two heartbeats and to another master (a failover)
        that lacks the last writes: the next heartbeat re-writes this node's state, as after an outage."""
        self._lost("the connection was re-established, perhaps to another master")

    def _lost(self, why: str) -> None:
        self._announced = False  # once back, announce in full (key and NODES): Redis may have lost either
        if self.up:
            self.up = False
            self.log.warn("lost Redis at {url} ({why}): serving this node's sessions, cluster state paused",
                          url=self.redis_name, why=why)

    @defer.inlineCallbacks
    def stop(self):
        """Leave the cluster: stop beating and remove this node's key (a graceful stop is no death)."""
        if self._loop.running:
            self._loop.stop()
        if self._settling is not None and self._settling.active():
            self._settling.cancel()
        if connected(self.redis):
            yield self.redis.delete(node_key(self.node_id))
            yield self.redis.srem(NODES, [self.node_id])

    @defer.inlineCallbacks
    def list_nodes(self):
        """Every live node's announcement, by id (at most MAX_NODES)."""
        require(self.redis)
        ids = sorted((yield self.redis.smembers(NODES)))[:MAX_NODES]
        if not ids:
            return []
        values = yield self.redis.mget([node_key(i) for i in ids])
        return [json.loads(v) for v in values if v is not None]
