"""The cluster's session store: this node's records in memory (MemoryStorage, so the hot path never
waits on Redis), mirrored to Redis for what must outlive the node (the purge of a dead node, its
sessions' testaments) and for the sessions of a node that cannot answer.

Cluster-wide reads (count, list, get: the session meta and admin APIs) ask every node over the bus,
and each answers for its own sessions from memory: a session is then seen everywhere from the moment
its WELCOME is sent until its GOODBYE or close is processed, and a join costs nothing more than on
one node. Writing the record before WELCOME instead would add a Redis round trip to every join and
still show a closed session until its deletion is written.

Redis keys (prefix `cy:`): `cy:s:<id>` a hash per session (node, realm, authid, authrole, details as
JSON, last_active); sets of session ids `cy:sessions` (all), `cy:r:<realm>`, `cy:a:<realm>:<authid>`,
`cy:ro:<realm>:<authrole>` (the realm prefixed by its length in bytes, so no separator can be
forged) and
`cy:n:<node>:s` (the node's, for the purge of a dead node).

Writes are batched: a change marks the session id dirty and one pipeline a moment later writes what
each dirty id is now (a record, or its deletion), so a session opened and closed within the batch
costs nothing, and while Redis is away the backlog is a set of ids, at most the node's sessions plus
those closed since. Last activity is written at most once per `activity_interval` per session.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.logger import Logger

from router.cluster.connection import connected, require
from router.serializers import JsonSerializer
from router.session import Session
from router.storage.memory import MemoryStorage

PREFIX = "cy:"
ALL = PREFIX + "sessions"
MAX_BATCH = 1000  # session ids written per pipeline; more go in the next one
ID_TAKEN = "courtyard.close.session_id_taken"  # GOODBYE reason for the second of two sessions with one id
MAX_LIST = 10_000  # records one cluster-wide list reads at most
COUNT, SELECT, DETAILS = "sessions.count", "sessions.select", "sessions.details"  # questions to every node

_json = JsonSerializer()


def record_key(session_id: int) -> str:
    return f"{PREFIX}s:{session_id}"


def realm_key(realm: str) -> str:
    return f"{PREFIX}r:{realm}"


def authid_key(realm: str, authid: str) -> str:
    return f"{PREFIX}a:{len(realm.encode())}:{realm}:{authid}"  # the length in bytes, as Lua counts it


def authrole_key(realm: str, authrole: str) -> str:
    return f"{PREFIX}ro:{len(realm.encode())}:{realm}:{authrole}"


def node_sessions_key(node_id: str) -> str:
    return f"{PREFIX}n:{node_id}:s"


_INDEXES = ("all", "realm", "authid", "authrole", "node")


def _index_keys(node_id: str, realm: str, authid: str, authrole: str) -> tuple[str, ...]:
    return (ALL, realm_key(realm), authid_key(realm, authid), authrole_key(realm, authrole),
            node_sessions_key(node_id))


# KEYS: the record, the index sets to add to (ARGV[2] of them), then stale index sets to leave.
# ARGV: session id, how many index sets, node, realm, authid, authrole, last_active, details (JSON),
# testaments (JSON, or "" for none).
# A record another node holds (two nodes drew the same random id) is left alone: 0, and the id leaves
# this node's set; the caller closes its own session, the second to be written.
_PUT = """
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[3] then
  redis.call('SREM', KEYS[tonumber(ARGV[2]) + 1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], 'node', ARGV[3], 'realm', ARGV[4], 'authid', ARGV[5], 'authrole', ARGV[6],
           'last_active', ARGV[7], 'details', ARGV[8], 'testaments', ARGV[9])
local n = tonumber(ARGV[2])
for i = 2, n + 1 do redis.call('SADD', KEYS[i], ARGV[1]) end
for i = n + 2, #KEYS do redis.call('SREM', KEYS[i], ARGV[1]) end
return 1
"""
# KEYS: the record, then its index sets (this node's set last). ARGV: session id, node. A record that
# is another node's keeps its index entries (they are that node's too).
_DROP = """
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[2] then
  redis.call('SREM', KEYS[#KEYS], ARGV[1])
  return 0
end
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do redis.call('SREM', KEYS[i], ARGV[1]) end
return 1
"""


def decode_record(fields: Any) -> dict | None:
    """A details map (as `to_details_map` gives) from a record hash, with `node` added; None if empty."""
    if not fields or "details" not in fields:
        return None
    details = _json.decode(fields["details"].encode("utf-8"))
    details["node"] = fields.get("node")
    try:
        details["idle"] = round(max(0.0, time.time() - float(fields.get("last_active", 0))), 3)
    except ValueError:
        pass
    return details


class RedisStorage(MemoryStorage):
    log = Logger()
    clustered = True

    def __init__(self, node_id: str, activity_interval: float = 5.0, flush_delay: float = 0.02) -> None:
        super().__init__()
        self.node_id = node_id
        self.activity_interval = activity_interval
        self.flush_delay = flush_delay
        self.redis: Any = None
        self._dirty: set[int] = set()
        # What Redis holds for each of our ids: (realm, authid, authrole), so that a deletion or a
        # re-index knows which index entries to remove without reading them back.
        self._written: dict[int, tuple[str, str, str]] = {}
        self._activity_written: dict[int, float] = {}
        self._testaments: dict[int, dict] = {}  # a session's testaments, written with its record
        self._flush_call = None
        self._flushing: defer.Deferred | None = None
        self._activity_loop = task.LoopingCall(self.write_activity)
        self.gather: Any = None  # asks the other nodes (router/cluster/gather.py), once `listen` is called

    # -- the node's own records: MemoryStorage, plus a mark ------------------------------------------
    def insert(self, session: Session) -> bool:
        if not super().insert(session):
            return False
        self._mark(session.id)
        return True

    def remove(self, session_id: int) -> Session | None:
        s = super().remove(session_id)
        if s is not None:
            self._activity_written.pop(session_id, None)
            self._testaments.pop(session_id, None)
            self._mark(session_id)
        return s

    def changed(self, session: Session, old: dict) -> None:
        super().changed(session, old)
        self._mark(session.id)

    def testaments_changed(self, session_id: int, testaments: dict | None) -> None:
        if session_id not in self._by_id:
            return
        if testaments:
            self._testaments[session_id] = {scope: [list(t[:4]) for t in ts] for scope, ts in testaments.items()}
        else:
            self._testaments.pop(session_id, None)
        self._mark(session_id)

    def _mark(self, session_id: int) -> None:
        self._dirty.add(session_id)
        if self._flush_call is None and self.redis is not None:
            self._flush_call = reactor.callLater(self.flush_delay, self.flush)

    # -- mirroring -----------------------------------------------------------------------------------
    def attach(self, redis: Any) -> None:
        """Start mirroring over `redis` (a txredisapi connection); everything local is written."""
        self.redis = redis
        self.resync()
        if not self._activity_loop.running:
            self._activity_loop.start(self.activity_interval, now=False)

    def detach(self) -> None:
        if self._activity_loop.running:
            self._activity_loop.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.redis = None
        if self.gather is not None:
            self.gather.stop()  # questions still waiting fail now, not at their timeout

    def resync(self) -> None:
        """Write every local record and delete every one we wrote and closed since: after a reconnect,
        when Redis may have lost everything (idempotent)."""
        self._dirty.update(self._by_id)
        self._dirty.update(self._written)
        self._activity_written.clear()
        if self.redis is not None and self._flush_call is None:
            self._flush_call = reactor.callLater(0, self.flush)

    def backlog(self) -> int:
        return len(self._dirty)

    @defer.inlineCallbacks
    def flush(self):
        """Write the dirty ids in pipelines of at most MAX_BATCH; while Redis is away they stay dirty."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        while self._flushing is not None:  # one pipeline at a time
            yield self._flushing
        if not connected(self.redis) or not self._dirty:
            return
        batch = [self._dirty.pop() for _ in range(min(MAX_BATCH, len(self._dirty)))]
        collided: list[int] = []
        self._flushing = defer.Deferred()
        try:
            pipe = yield self.redis.pipeline()
            puts = [(sid, put) for sid in batch if (put := self._write(pipe, sid)) is not None]
            results = yield pipe.execute_pipeline()
            collided = [sid for (sid, put), result in zip(puts, results or [], strict=False) if put and result == 0]
        except Exception as e:  # Redis went away mid-batch: write these again later
            self._dirty.update(batch)
            self.log.debug("session mirror batch failed: {e}", e=e)
        finally:
            d, self._flushing = self._flushing, None
            d.callback(None)
        for sid in collided:
            self._collided(sid)
        if self._dirty and self._flush_call is None and connected(self.redis):
            self._flush_call = reactor.callLater(self.flush_delay, self.flush)

    def _write(self, pipe: Any, sid: int) -> bool | None:
        """One command per session (a Lua script: the record and its index entries together), so a
        session's open and close cost the node two commands, not a dozen. True: the record was put,
        False: dropped, None: no command."""
        s = self._by_id.get(sid)
        before = self._written.get(sid)
        if s is None:
            if before is not None:
                pipe.execute_command("EVAL", _DROP, 1 + len(_INDEXES), record_key(sid),
                                     *_index_keys(self.node_id, *before), sid, self.node_id)
                del self._written[sid]
                return False
            return None
        now = (s.realm_uri, s.authid, s.authrole)
        keys = _index_keys(self.node_id, *now)
        stale = [k for k in _index_keys(self.node_id, *before) if k not in keys] if before not in (None, now) else []
        pipe.execute_command("EVAL", _PUT, 1 + len(keys) + len(stale), record_key(sid), *keys, *stale,
                             sid, len(keys), self.node_id, s.realm_uri, s.authid, s.authrole, repr(s.last_active),
                             _json.encode(s.to_details_map()).decode("utf-8"), self._testaments_json(sid))
        self._written[sid] = now
        self._activity_written[sid] = s.last_active
        return True

    def _collided(self, sid: int) -> None:
        """Another node's live session has this id (random ids from 2^53: about n/2^53 per session
        opened, n the sessions in the cluster). Its record stays; this node's session, written second,
        is closed, so that an id names one session in the cluster."""
        self._written.pop(sid, None)
        self._activity_written.pop(sid, None)
        s = self._by_id.get(sid)
        if s is not None:
            self.log.warn("session {sid}: its id is another node's session's (a random id drawn twice); closing it "
                          "here, the client may join again", sid=sid)
            s.transport.close(ID_TAKEN, "the session id is in use on another node; join again")

    def _testaments_json(self, sid: int) -> str:
        t = self._testaments.get(sid)
        return "" if not t else _json.encode(t).decode("utf-8")

    @defer.inlineCallbacks
    def write_activity(self):
        """Every `activity_interval`: the last activity of sessions active since it was last written."""
        if not connected(self.redis) or self._flushing is not None:
            return
        stale = [(sid, s.last_active) for sid, s in self._by_id.items()
                 if sid in self._written and sid not in self._dirty
                 and s.last_active > self._activity_written.get(sid, 0.0)]
        if not stale:
            return
        try:
            pipe = yield self.redis.pipeline()
            for sid, t in stale[:MAX_BATCH * 10]:
                pipe.hset(record_key(sid), "last_active", repr(t))
            yield pipe.execute_pipeline()
        except Exception as e:
            self.log.debug("last-activity batch failed: {e}", e=e)
            return
        for sid, t in stale[:MAX_BATCH * 10]:
            self._activity_written[sid] = t

    # -- cluster-wide queries: asynchronous, they ask the nodes ----------------------------------------
    # Each node answers for its own sessions from memory, exactly as they are when it hears the question
    # (router/cluster/gather.py), so a session is seen everywhere from its WELCOME until its GOODBYE or
    # close: the Redis mirror lags by its flush and is read only for the nodes that do not answer in
    # time (stalled, or dead and not purged yet). This node's part is read when the question is asked.
    # Without a bus (`listen` not called) the queries read the mirror alone.
    def listen(self, gather: Any) -> None:
        """Answer the other nodes' session queries, and ask theirs through `gather` (a Gather)."""
        self.gather = gather
        gather.answer(COUNT, lambda body: self._count_here(*body))
        gather.answer(SELECT, lambda body: self._select_here(*body))
        gather.answer(DETAILS, self._details_here)

    def _count_here(self, realm_uri: str | None, authrole: str | None) -> int:
        if authrole is not None:
            return len(self.select(realm_uri, authrole=authrole))
        return self.count(realm_uri)

    def _select_here(self, realm_uri: str | None, authid: str | None, authrole: str | None) -> list[dict]:
        found = sorted(self.select(realm_uri, authid, authrole), key=lambda s: s.id)[:MAX_LIST]
        return [self._details(s) for s in found]

    def _details_here(self, session_id: int) -> dict | None:
        s = self._by_id.get(session_id)
        return None if s is None else self._details(s)

    def _details(self, s: Session) -> dict:
        return {**s.to_details_map(), "node": self.node_id}

    @defer.inlineCallbacks
    def cluster_count(self, realm_uri: str | None = None, authrole: str | None = None):
        require(self.redis)
        if realm_uri is not None and authrole is not None:
            key = authrole_key(realm_uri, authrole)
        else:
            key = ALL if realm_uri is None else realm_key(realm_uri)
        if self.gather is None:
            n = yield self.redis.scard(key)
            return int(n)
        here = self._count_here(realm_uri, authrole)
        answers, silent = yield self.gather.ask(COUNT, [realm_uri, authrole])
        mirrored = yield self._mirrored(silent, key)
        return here + sum(int(n) for n in answers.values()) + len(mirrored)

    @defer.inlineCallbacks
    def cluster_select(self, realm_uri: str | None = None, authid: str | None = None,
                       authrole: str | None = None):
        """Details maps of matching sessions on every node (at most MAX_LIST, by session id)."""
        require(self.redis)
        keys = [ALL if realm_uri is None else realm_key(realm_uri)]
        if realm_uri is not None and authid is not None:
            keys = [authid_key(realm_uri, authid)]
        if realm_uri is not None and authrole is not None:
            keys.append(authrole_key(realm_uri, authrole))
        if self.gather is None:
            ids = yield (self.redis.smembers(keys[0]) if len(keys) == 1 else self.redis.sinter(keys))
            found = yield self._records(sorted(int(i) for i in ids)[:MAX_LIST])
        else:
            here = self._select_here(realm_uri, authid, authrole)
            answers, silent = yield self.gather.ask(SELECT, [realm_uri, authid, authrole])
            ids = yield self._mirrored(silent, *keys)
            found = here + [d for ds in answers.values() for d in ds]
            found += (yield self._records(sorted(ids)[:MAX_LIST]))
            found = sorted({d["session"]: d for d in found if d is not None}.values(),
                           key=lambda d: d["session"])[:MAX_LIST]
        return [d for d in found if d is not None
                and (authid is None or d["authid"] == authid) and (authrole is None or d["authrole"] == authrole)]

    @defer.inlineCallbacks
    def cluster_details(self, session_id: int):
        """The details map of a session on any node (`node` says which), or None."""
        s = self._by_id.get(session_id)
        if s is not None:
            return self._details(s)
        require(self.redis)
        if self.gather is None:
            found = yield self._records([session_id])
            return found[0]
        answers, silent = yield self.gather.ask(DETAILS, session_id, enough=lambda d: d is not None)
        found = next((d for d in answers.values() if d is not None), None)
        if found is None and silent:
            row = yield self.redis.hgetall(record_key(session_id))
            if row and row.get("node") in silent:
                found = decode_record(row)
        return found

    @defer.inlineCallbacks
    def _mirrored(self, silent: set[str], *keys: str):
        """The ids of the silent nodes' sessions in all of `keys`, as their Redis mirror holds them."""
        if not silent:
            return []
        pipe = yield self.redis.pipeline()
        for node in sorted(silent):
            pipe.sinter([node_sessions_key(node), *keys])
        rows = yield pipe.execute_pipeline()
        return [int(i) for row in rows for i in row]

    @defer.inlineCallbacks
    def _records(self, ids: list[int]):
        if not ids:
            return []
        pipe = yield self.redis.pipeline()
        for sid in ids:
            pipe.hgetall(record_key(sid))
        rows = yield pipe.execute_pipeline()
        out = []
        for sid, row in zip(ids, rows, strict=True):
            local = self._by_id.get(sid)
            out.append(self._details(local) if local is not None else decode_record(row))
        return out
