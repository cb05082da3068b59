"""Admin users across a cluster: `admin.users` comes from each node's own YAML, so a node whose file
lacks a user (or has another ticket for it) refuses a login another node accepts. Each node writes a
digest of its admin users to Redis when it joins and on every reload, and says in its log which live
nodes differ — one warning, naming the authids, never a secret.

Key: `cy:admin:users`, a hash node id → JSON {"digest": sha256 of the users (secrets included),
"authids": [...]}; entries of nodes no longer alive are left and ignored (only live nodes compare).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

KEY = "cy:admin:users"
MAX_AUTHIDS = 100  # named in a warning
log = Logger()


def digest(users: dict) -> dict:
    """What a node writes: the users' digest (their definitions, secrets included) and their authids."""
    text = repr(sorted((authid, repr(user)) for authid, user in users.items()))
    return {"digest": hashlib.sha256(text.encode()).hexdigest(), "authids": sorted(users)[:MAX_AUTHIDS]}


@defer.inlineCallbacks
def compare(redis: Any, node_id: str, users: dict, live: list[str]):
    """Write this node's digest, then warn about each live node whose admin users differ. Returns the
    ids of those nodes (Redis errors: logged, [])."""
    mine = digest(users)
    try:
        yield redis.hset(KEY, node_id, json.dumps(mine))
        others = yield redis.hgetall(KEY)
    except Exception as e:  # Redis away: the membership logs that; this check waits for the next reload
        log.warn("admin users: cannot compare with the other nodes: {e}", e=e)
        return []
    differing = []
    for other, raw in sorted((others or {}).items()):
        if other == node_id or other not in live:
            continue
        try:
            theirs = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if isinstance(theirs, dict) and theirs.get("digest") != mine["digest"]:
            differing.append(other)
            log.warn("admin.users differ from node {other}'s (here: {mine}; there: {theirs}): an admin login "
                     "works on some nodes only; keep admin.users the same on every node and reload them",
                     other=other, mine=", ".join(mine["authids"]) or "none",
                     theirs=", ".join(theirs.get("authids") or []) or "none")
    return differing
