"""Admin users across a cluster: `admin.users` comes from each node's own YAML, yet an admin login
that works on one node must work on every node. So each node publishes its YAML admin users to Redis
(when it joins, on every reload, and again after Redis came back), and every node installs the
cluster-wide set as its admin realm's YAML base (the cluster realm store's admin changes still lie
over it, realmstore.py).

What is published is what the config holds: the role, the ticket's salted PBKDF2 hash, Ed25519
public keys (realms/secrets.py) — never a plain secret (the admin realm has no WAMP-CRA, so there is
no unsalted CRA secret to keep out; one would not be published).

The rule: the cluster-wide set is the union of the live nodes' admin users. An authid defined
differently on two live nodes takes the definition loaded most recently: each node stamps a user's
definition with its clock when it first loads it (at start, or a reload that changed it; an unchanged
one keeps its stamp), ties broken by node id. So a ticket rotated by a reload on one node is rotated
everywhere, a user removed from every live node's YAML is gone, and entries of nodes no longer alive
are ignored. Definitions that differ are logged, one line naming the authids and nodes, when that
set of conflicts changes.

Key: `cy:admin:users`, a hash node id → JSON {"users": {authid: {"at": stamp, "user": definition}}}.
A node writes its entry, then tells every node (`admin_users_changed` on the bus); each reads the
entries of the live nodes (one script) and installs what they make. A node that stops removes its
entry; one that died leaves it, ignored once its key is gone (membership.py), and every node reads
again when it is told a node is down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from realms.realm import User
from realms.schema import ConfigError, parse_user
from router.cluster.connection import connected
from router.cluster.membership import node_key

KEY = "cy:admin:users"
CHANGED = "admin_users_changed"  # the broadcast: a node wrote its entry; read them all again
MAX_USERS = 1000  # admin users published per node
MAX_NAMED = 20  # authids named in a conflict line

Stamped = dict[str, tuple[float, dict]]  # authid → (when this node loaded it, its definition)

# KEYS: the admin users hash. ARGV: this node's id, the prefix of the nodes' keys. The other live
# nodes' entries, as node id, entry pairs.
_LIVE = """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. all[i]) == 1 then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"""


def definition(user: User) -> dict:
    """A user as published: what the config holds of it, its derived secrets only."""
    d: dict[str, Any] = {"role": user.role}
    if user.ticket:
        d["ticket"] = user.ticket
    if user.cryptosign:
        d["cryptosign"] = list(user.cryptosign)
    c = user.wampcra
    if c is not None and c.salt is not None:
        d["wampcra"] = {"key": c.key, "salt": c.salt, "iterations": c.iterations, "keylen": c.keylen}
    return d


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _entry(raw: Any) -> Stamped:
    """A node's entry as read from Redis; what cannot be read counts as no users."""
    try:
        users = json.loads(raw).get("users")
        return {str(a): (float(u["at"]), dict(u["user"])) for a, u in list(users.items())[:MAX_USERS]}
    except (TypeError, ValueError, KeyError, AttributeError):
        return {}


class ClusterAdminUsers:
    """A cluster part (part.py): this node's YAML admin users out to Redis, the cluster-wide set in
    through `install(users)` (the admin realm's base users)."""

    log = Logger()

    def __init__(self, redis: Any, bus: Any, node_id: str, users: dict[str, User],
                 install: Callable[[dict[str, User]], None]) -> None:
        self.redis = redis
        self.bus = bus
        self.node_id = node_id
        self.install = install
        self.mine: Stamped = {}
        self.others: dict[str, Stamped] = {}  # the other live nodes' entries, as last read
        self._installed: dict | None = None  # the definitions installed last
        self._said = ""  # the conflicts logged last
        self._stamp(users)

    def _stamp(self, users: dict[str, User]) -> None:
        now = time.time()
        mine: Stamped = {}
        for authid, user in list(users.items())[:MAX_USERS]:
            d = definition(user)
            held = self.mine.get(authid)
            mine[authid] = held if held is not None and held[1] == d else (now, d)
        self.mine = mine

    def load(self, users: dict[str, User]) -> dict[str, User]:
        """A reload read this node's admin users: the cluster-wide set they make with the other nodes'
        entries as last read (the reload installs it), then published."""
        self._stamp(users)
        self._installed, merged = self._merge()
        self.publish()
        return merged

    def publish(self) -> defer.Deferred:
        """Write this node's entry, tell the other nodes, and read theirs again. Redis away: nothing
        (`resync` writes it once Redis is back)."""
        if not connected(self.redis):
            return defer.succeed(None)
        entry = {"users": {a: {"at": at, "user": d} for a, (at, d) in self.mine.items()}}
        d = self.redis.hset(KEY, self.node_id, json.dumps(entry))
        d.addCallback(lambda _: self.bus.broadcast(CHANGED, None))
        d.addCallback(lambda _: self.refresh())
        return d.addErrback(self._failed, "publishing this node's admin users")

    def refresh(self) -> defer.Deferred:
        """Read the other live nodes' entries and install the cluster-wide set if it changed."""
        if not connected(self.redis):
            return defer.succeed(None)  # read again when Redis is back (resync)
        d = self.redis.execute_command("EVAL", _LIVE, 1, KEY, self.node_id, node_key(""))
        d.addCallback(self._read)
        return d.addErrback(self._failed, "reading the cluster's admin users")

    def _read(self, flat: Any) -> None:
        flat = list(flat or [])
        self.others = {str(flat[i]): _entry(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
        chosen, users = self._merge()
        if chosen != self._installed:
            self._installed = chosen
            self.install(users)

    def _merge(self) -> tuple[dict, dict[str, User]]:
        """(definitions, users): the most recently loaded definition of each authid, over this node
        and the other live nodes; conflicts said in one line when they changed."""
        candidates: dict[str, list[tuple[float, str, dict]]] = {}
        for node, entry in [(self.node_id, self.mine), *sorted(self.others.items())]:
            for authid, (at, d) in entry.items():
                candidates.setdefault(authid, []).append((at, node, d))
        chosen: dict[str, dict] = {}
        users: dict[str, User] = {}
        conflicts = []
        for authid, found in sorted(candidates.items()):
            at, node, d = max(found, key=lambda c: (c[0], c[1]))
            chosen[authid] = d
            others = sorted(n for _, n, other in found if other != d)
            if others:
                conflicts.append(f"{authid} (node {node}'s, loaded {_iso(at)}, over {', '.join(others)}'s)")
            try:
                users[authid] = parse_user(authid, d, f"admin user {authid} of node {node}")
            except ConfigError as e:  # written by something else than a node: left out
                self.log.warn("admin users: {authid} of node {node} cannot be used: {e}", authid=authid,
                              node=node, e=e.reason)
        said = "; ".join(conflicts[:MAX_NAMED]) + (f"; and {len(conflicts) - MAX_NAMED} more"
                                                   if len(conflicts) > MAX_NAMED else "")
        if said and said != self._said:
            self.log.warn("admin.users defined differently on live nodes, the most recently loaded used "
                          "cluster-wide: {said}; keep admin.users the same on every node", said=said)
        self._said = said
        return chosen, users

    def _failed(self, failure: Any, what: str) -> None:
        self.log.warn("admin users: {what} failed: {e}", what=what, e=failure.getErrorMessage())

    # -- ClusterPart -----------------------------------------------------------------------------
    def start(self) -> defer.Deferred:
        """At join, before listening: this node's entry written, the cluster-wide set installed (the
        others read it once this node is a member: `publish` again after the first heartbeat)."""
        return self.publish()

    def realm_started(self, router: Any) -> None:
        return None

    def node_down(self, node_id: str) -> None:
        self.refresh()

    def resync(self) -> None:
        self.publish()

    @defer.inlineCallbacks
    def stop(self):
        if connected(self.redis):
            yield self.redis.hdel(KEY, self.node_id)
