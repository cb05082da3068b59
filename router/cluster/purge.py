"""A dead node's sessions are removed by exactly one survivor. A node is dead when its id is still in
`cy:nodes` but its key has expired (membership.py). Survivors look on every heartbeat; the first to
claim it (`cy:purge:<id>`, set only if absent and only while the node's key is still gone, in one
script: a node that re-announced itself meanwhile is not purged) purges. The claim leaves the
tombstone `cy:fenced:<id>` naming the incarnation purged, so that the node, if it was only stalled or
cut off, learns it was purged when it comes back (membership.py: fencing). Then a Lua script
deletes the dead node's session records and their index entries inside Redis, batch by batch, and
returns who they were; then the
node is forgotten and the leavers are broadcast, so that every node fires `wamp.session.on_leave`
to its own subscribers. The claim expires after `claim_ttl`, so if the purging node dies half way,
another survivor finishes the job (every step is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from router.cluster.membership import FENCE_TTL, NODES, fence_key, incarnation_key, node_key
from router.storage.redis import node_sessions_key

MAX_PURGE = 100_000  # sessions of one dead node removed per claim; the rest at the next heartbeat
PURGE_BATCH = 1000  # session ids per script call

# KEYS[1]: the dead node's set of session ids. ARGV: the dead node's id, then session ids. Removes each
# session's record and index entries if the record is still the dead node's; returns what it removed,
# as [id, realm, authid, authrole, testaments (JSON, or "")]. Key names as in router/storage/redis.py.
_PURGE = """
local dead, out = ARGV[1], {}
for i = 2, #ARGV do
  local sid = ARGV[i]
  local rec = redis.call('HMGET', 'cy:s:' .. sid, 'realm', 'authid', 'authrole', 'node', 'testaments')
  redis.call('SREM', KEYS[1], sid)
  if rec[4] == dead then
    local realm, authid, authrole = rec[1], rec[2], rec[3]
    local r = string.len(realm) .. ':' .. realm .. ':'
    redis.call('DEL', 'cy:s:' .. sid)
    redis.call('SREM', 'cy:sessions', sid)
    redis.call('SREM', 'cy:r:' .. realm, sid)
    redis.call('SREM', 'cy:a:' .. r .. authid, sid)
    redis.call('SREM', 'cy:ro:' .. r .. authrole, sid)
    out[#out + 1] = {sid, realm, authid, authrole, rec[5] or ''}
  end
end
return out
"""
# KEYS: the dead node's key, the claim, its incarnation key, its tombstone. ARGV: the claimer's id,
# the claim's TTL and the tombstone's, in ms. 1: claimed (and the tombstone left), 0: not.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return 0 end
local incarnation = redis.call('GET', KEYS[3])
if incarnation then
  redis.call('SET', KEYS[4], incarnation, 'PX', ARGV[3])
  redis.call('DEL', KEYS[3])
end
return 1
"""
LEFT = "sessions_left"  # the broadcast: [[realm, session id, authid, authrole, testaments JSON], ...]
NODE_DOWN = "node_down"  # the broadcast: a node's id, once it is gone (dead and purged, or stopped)
# What else a node keeps in Redis under its id (its routing state: router/cluster/*), removed with it.
NODE_KEYS: list[Callable[[str], str]] = []
MAX_ANNOUNCE = 4 * 1024 * 1024  # bytes of testaments per broadcast (one session's may be 1 MiB)


def _chunks(left: list, limit: int):
    """The leavers in broadcasts of at most `limit` bytes of testaments (at least one leaver each)."""
    chunk, size = [], 0
    for entry in left:
        if chunk and size + len(entry[4]) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += len(entry[4])
    if chunk:
        yield chunk


def claim_key(node_id: str) -> str:
    return f"cy:purge:{node_id}"


class Purger:
    log = Logger()

    def __init__(self, redis: Any, node_id: str, claim_ttl: float, announce: Callable[[list], Any],
                 gone: Callable[[str], Any] = lambda node: None, dead: Callable[[str], None] = lambda node: None,
                 ) -> None:
        self.redis = redis
        self.node_id = node_id
        self.claim_ttl = claim_ttl  # seconds a claim holds before another survivor may take over
        self.announce = announce  # broadcast the leavers to every node
        self.gone = gone  # broadcast that a node is gone, once purged (NODE_DOWN)
        self.dead = dead  # told here of every dead node seen, before any claim: its routes go at once

    @defer.inlineCallbacks
    def dead_nodes(self):
        ids = sorted((yield self.redis.smembers(NODES)))[:1000]
        others = [i for i in ids if i != self.node_id]
        if not others:
            return []
        alive = yield self.redis.mget([node_key(i) for i in others])
        return [i for i, v in zip(others, alive, strict=True) if v is None]

    @defer.inlineCallbacks
    def sweep(self):
        """Purge every dead node this node can claim; returns the ids purged here."""
        purged = []
        for dead in (yield self.dead_nodes()):
            self.dead(dead)
            if (yield self.purge(dead)) is not None:
                purged.append(dead)
        return purged

    @defer.inlineCallbacks
    def purge(self, dead: str):
        """Remove `dead`'s records if this node wins the claim: the leavers, or None if another did."""
        won = yield self.redis.execute_command("EVAL", _CLAIM, 4, node_key(dead), claim_key(dead),
                                               incarnation_key(dead), fence_key(dead), self.node_id,
                                               int(self.claim_ttl * 1000), FENCE_TTL * 1000)
        if won != 1:
            return None
        ids = sorted(int(i) for i in (yield self.redis.smembers(node_sessions_key(dead))))[:MAX_PURGE]
        left = []
        for i in range(0, len(ids), PURGE_BATCH):  # one script call per batch: the work is Redis's
            rows = yield self.redis.execute_command("EVAL", _PURGE, 1, node_sessions_key(dead), dead,
                                                    *ids[i:i + PURGE_BATCH])
            left.extend([realm, int(sid), authid, authrole, testaments or ""]
                        for sid, realm, authid, authrole, testaments in rows)
        more = yield self.redis.scard(node_sessions_key(dead))
        if not more:
            yield self.redis.delete([node_sessions_key(dead), *(key(dead) for key in NODE_KEYS)])
            yield self.redis.srem(NODES, dead)
        for chunk in _chunks(left, MAX_ANNOUNCE):
            yield self.announce(chunk)
        yield self.gone(dead)
        # The claim is left to expire: a survivor that listed the dead node before it was forgotten
        # cannot claim it again meanwhile.
        self.log.info("node {dead} is dead (its key expired): purged its {n} sessions", dead=dead, n=len(left))
        return left
