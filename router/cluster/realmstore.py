"""A cluster's realm store: admin changes to realms and users kept in Redis, not in a node's SQLite
file, so every node has the same realms and users (issue 12, point 6).

The rules are RealmStore's (realms/store.py): the YAML is each node's base layer, a change recorded
here wins over it, a realm updated keeps the YAML's other keys. Keys (prefix `cy:rs:`):
`cy:rs:realms` the set of realm URIs with records; `cy:rs:r:<uri>` a hash, `~kind` (created, changed,
deleted) and each recorded top-level key as JSON (an update is an HSET of its keys: atomic, no
read-modify-write); `cy:rs:u:<uri>` a hash authid → the user's definition as JSON (`null`: removed);
`cy:rs:version` counts the changes (its absence: this Redis does not hold the store).

A change is one Lua script, then a broadcast on the bus (`realm_changed`: the URI and the store's
version after it). Every node,
the writer included, then reads that realm's records back and installs what they make of its own
YAML base, so all nodes converge on what Redis holds whatever order the broadcasts come in. A node
that was cut off from Redis (it may have missed broadcasts) reads the whole store again when it is
back.

Redis without persistence loses the store when it restarts. The nodes keep a copy of the records
they last read, with its version; a node whose copy is newer than what Redis holds (nothing, or what
a node started meanwhile wrote) writes its copy back, in one script that checks the version, so
exactly one copy lands; then every node reads the store again (`realm_store_restored`). Changes are
refused while Redis holds no store. If every node was down when Redis lost its data, the changes are
gone: run Redis with persistence (appendonly) to keep them in that case.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from realms.realm import Realm
from realms.schema import ConfigError
from realms.store import CREATED, DELETED, StoreWriteError, overlay
from router.cluster.connection import connected

PREFIX = "cy:rs:"
REALMS = PREFIX + "realms"
VERSION = PREFIX + "version"
KIND = "~kind"  # a field name no realm definition key can have
REALM_CHANGED = "realm_changed"  # the broadcast: {"realm": uri, "version": n}
RESTORED = "realm_store_restored"  # the broadcast after a node wrote its copy back: read it all again
MAX_REALMS = 10_000  # realms with records in the store
MAX_USERS = 100_000  # users recorded per realm

Rows = tuple[dict, dict]  # (the realm hash, the users hash) as Redis returns them: str → str


def realm_key(uri: str) -> str:
    return f"{PREFIX}r:{uri}"


def users_key(uri: str) -> str:
    return f"{PREFIX}u:{uri}"


_ROOM = """
if redis.call('EXISTS', KEYS[3]) == 0 then return redis.error_reply('UNSEEDED') end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return redis.error_reply('FULL realms')
end
"""
# KEYS: realms set, realm hash, version, users hash. ARGV: uri, max realms, kind, then field, value pairs.
_SAVE_REALM = _ROOM + """
redis.call('DEL', KEYS[2])
if ARGV[3] == 'deleted' then redis.call('DEL', KEYS[4]) end
redis.call('HSET', KEYS[2], '~kind', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[3])
"""
# KEYS: realms set, realm hash, version. ARGV: uri, max realms, then field, value pairs.
_UPDATE_REALM = _ROOM + """
local kind = redis.call('HGET', KEYS[2], '~kind')
if not kind or kind == 'deleted' then
  redis.call('DEL', KEYS[2])
  kind = 'changed'
end
redis.call('HSET', KEYS[2], '~kind', kind)
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[3])
"""
# KEYS: realms set, users hash, version. ARGV: uri, max realms, max users, authid, definition JSON.
_SAVE_USER = _ROOM + """
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  return redis.error_reply('FULL users')
end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[3])
"""
# KEYS: version, realms set. ARGV: the copy's version, realm count, then per realm: uri, n, n realm
# fields and values, m, m user fields and values. Replaces the store with the copy only if Redis holds
# none or an older one; returns 1 if it did.
_SEED = """
local held = redis.call('GET', KEYS[1])
if held and tonumber(held) >= tonumber(ARGV[1]) then return 0 end
for _, uri in ipairs(redis.call('SMEMBERS', KEYS[2])) do redis.call('DEL', 'cy:rs:r:' .. uri, 'cy:rs:u:' .. uri) end
redis.call('DEL', KEYS[2])
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local uri = ARGV[i]
  redis.call('SADD', KEYS[2], uri)
  for _, key in ipairs({'cy:rs:r:' .. uri, 'cy:rs:u:' .. uri}) do
    redis.call('DEL', key)
    local n = tonumber(ARGV[i + 1])
    for j = i + 2, i + 1 + 2 * n, 2 do redis.call('HSET', key, ARGV[j], ARGV[j + 1]) end
    i = i + 1 + 2 * n
  end
  i = i + 1
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def _pairs(fields: dict) -> list[str]:
    return [x for kv in fields.items() for x in kv]


class ClusterRealmStore:
    """RealmStore's interface (save_realm, update_realm, save_user), answering Deferreds once Redis
    has the change and every node was told; plus `load` and `refresh`, which install what the store
    says into this node's registry through `install(uri, realm or None)`."""

    log = Logger()

    def __init__(self, redis: Any, bus: Any, base: dict[str, Realm],
                 install: Callable[[str, Realm | None], None]) -> None:
        self.redis = redis
        self.bus = bus
        self.base = base  # the YAML's realms, untouched copies
        self.install = install
        self.rows: dict[str, Rows] = {}  # the records as last read: what this node writes back (seed)
        self.version = 0  # the store's version these records are (at least)
        self._loading: defer.Deferred | None = None

    # -- changes -----------------------------------------------------------------------------------
    def save_realm(self, uri: str, definition: dict | None) -> defer.Deferred:
        fields = {} if definition is None else {k: json.dumps(v) for k, v in definition.items() if k != "uri"}
        return self._write(uri, _SAVE_REALM, [REALMS, realm_key(uri), VERSION, users_key(uri)],
                           [uri, MAX_REALMS, CREATED if definition is not None else DELETED, *_pairs(fields)])

    def update_realm(self, uri: str, changes: dict) -> defer.Deferred:
        fields = {k: json.dumps(v) for k, v in changes.items()}
        return self._write(uri, _UPDATE_REALM, [REALMS, realm_key(uri), VERSION], [uri, MAX_REALMS, *_pairs(fields)])

    def save_user(self, realm: str, authid: str, definition: dict | None) -> defer.Deferred:
        return self._write(realm, _SAVE_USER, [REALMS, users_key(realm), VERSION],
                           [realm, MAX_REALMS, MAX_USERS, authid, json.dumps(definition)])

    def _write(self, uri: str, script: str, keys: list, argv: list) -> defer.Deferred:
        """One script, then the broadcast; StoreWriteError (raised at once while Redis is away)."""
        if not connected(self.redis):
            raise StoreWriteError("the cluster's Redis is unreachable; the change was not made")
        d = self.redis.execute_command("EVAL", script, len(keys), *keys, *argv)
        d.addCallback(lambda version: self.bus.broadcast(REALM_CHANGED, {"realm": uri, "version": version}))
        return d.addErrback(self._refused)

    def _refused(self, failure: Any) -> None:
        text = failure.getErrorMessage()
        if "UNSEEDED" in text:  # Redis restarted empty and this node has not written its copy back yet
            self.reload()
            why = "the realm store is being restored after a Redis restart; retry in a moment"
        elif "FULL" in text:
            why = (f"the cluster's realm store holds its maximum of {MAX_REALMS} realms" if "realms" in text
                   else f"the cluster's realm store holds its maximum of {MAX_USERS} users in this realm")
        else:
            why = text.splitlines()[0][:200] if text else "no answer"
        self.log.error("cluster realm store: a change could not be stored ({why}); it was refused", why=why)
        raise StoreWriteError(f"cluster realm store: the change could not be stored ({why}); nothing was changed")

    # -- reading -----------------------------------------------------------------------------------
    @defer.inlineCallbacks
    def load(self):
        """At start and when Redis is back: write this node's copy back if Redis lost the store, then
        read it all and install every realm it or the YAML names."""
        seeded = yield self.redis.execute_command("EVAL", _SEED, 2, VERSION, REALMS, *self._seed_args())
        if seeded and self.version:
            self.log.warn("the cluster's realm store was missing or older in Redis (restarted without "
                          "persistence?): written back from this node's copy (version {v}, {n} realms)",
                          v=self.version, n=len(self.rows))
            yield self.bus.broadcast(RESTORED, {"version": self.version})
        version = yield self.redis.get(VERSION)
        uris = sorted((yield self.redis.smembers(REALMS)))[:MAX_REALMS]
        rows = yield self._read(uris)
        before = set(self.rows)
        self.rows = dict(zip(uris, rows, strict=True))
        self.version = int(version or 0)
        for uri in sorted(set(self.base) | before | set(self.rows)):
            self._install(uri)

    def _seed_args(self) -> list:
        out: list = [self.version, len(self.rows)]
        for uri, (realm, users) in self.rows.items():
            out += [uri, len(realm), *_pairs(realm), len(users), *_pairs(users)]
        return out

    def reload(self) -> defer.Deferred:
        """`load` once at a time (Redis back, or a write found the store unseeded); errors logged."""
        if self._loading is None:
            self._loading = self.load().addErrback(self._failed, "reading the realm store")
            self._loading.addBoth(self._loaded)
        return self._loading

    def _loaded(self, _: Any) -> None:
        self._loading = None

    @defer.inlineCallbacks
    def _read(self, uris: list[str]):
        if not uris:
            return []
        pipe = yield self.redis.pipeline()
        for uri in uris:
            pipe.hgetall(realm_key(uri))
            pipe.hgetall(users_key(uri))
        got = yield pipe.execute_pipeline()
        return [(got[i] or {}, got[i + 1] or {}) for i in range(0, len(got), 2)]

    def refresh(self, uri: Any, version: Any = None) -> defer.Deferred | None:
        """A node changed realm `uri` (the store is now at `version`): read its records and install them."""
        if not isinstance(uri, str) or not connected(self.redis):
            return None  # (away: the whole store is read again when Redis is back)
        if isinstance(version, int):
            self.version = max(self.version, version)
        return self._refresh(uri).addErrback(self._failed, f"reading realm {uri[:100]!r} from the store")

    @defer.inlineCallbacks
    def _refresh(self, uri: str):
        (realm, users), = yield self._read([uri])
        if realm or users:
            self.rows[uri] = (realm, users)
        else:
            self.rows.pop(uri, None)
        self._install(uri)

    def reinstall(self, uri: str) -> None:
        """Realm `uri`'s YAML base changed (the cluster-wide admin users): installed again, its records
        as last read laid over it."""
        self._install(uri)

    def _install(self, uri: str) -> None:
        realm_fields, user_fields = self.rows.get(uri, ({}, {}))
        try:
            definition = {k: json.loads(v) for k, v in realm_fields.items() if k != KIND}
            users = {authid: json.loads(v) for authid, v in user_fields.items()}
            realm = overlay(uri, self.base.get(uri), realm_fields.get(KIND), definition, users)
        except (ConfigError, ValueError, TypeError) as e:
            self.log.warn("cluster realm store: realm {uri} left as it was: its record cannot be used ({e})",
                          uri=uri, e=e)
            return
        self.install(uri, realm)

    def _failed(self, failure: Any, what: str) -> None:
        self.log.warn("cluster realm store: {what} failed: {e}", what=what, e=failure.getErrorMessage())
