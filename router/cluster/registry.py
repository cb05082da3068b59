"""The cluster's registrations in Redis, and every node's in-memory view of them.

Redis: a hash per realm, `cy:reg:<realm>`, field `[match, procedure]` (JSON) → the registration as JSON
`{id, invoke, created, callees: ["<node>|<session id>", ...] (in registration order), v}`, every number a
string (Lua's JSON would round session ids). `cy:n:<node>:reg` indexes a node's part (`realm\\nfield`)
for its cleanup; `cy:reg:realms` lists realms with registrations; `cy:reg:v` counts changes.

Every change is one Lua script, so it is atomic: REGISTER checks and appends in the same step (two
callees racing for a `single` procedure on two nodes: exactly one wins), and the script PUBLISHes the
entry after the change on the bus's broadcast channel itself, so every node sees the changes in the
order Redis made them. Each entry carries its change number `v`; a view applies a change only if it is
newer than what it has (a node applies its own changes as soon as the script answers, before their
broadcast comes back), and a reload (start, resync) takes Redis's snapshot and keeps anything newer.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from router.matching import PatternIndex

REG_KIND = "reg"  # the bus message the scripts publish: [realm, field, entry JSON or "", v]
COUNTER = "cy:reg:v"
REALMS = "cy:reg:realms"
MAX_TOMBSTONES = 10_000  # deleted entries remembered (their change number), newest kept
MAX_SNAPSHOT = 200_000  # entries one reload reads at most


def realm_key(realm: str) -> str:
    return f"cy:reg:{realm}"


def node_key(node_id: str) -> str:
    return f"cy:n:{node_id}:reg"


def field(procedure: str, match: str) -> str:
    return json.dumps([match, procedure])


def callee_id(node_id: str, session_id: int) -> str:
    return f"{node_id}|{session_id}"


# KEYS: realm hash, counter, node index, realms set. ARGV: sender node, realm, field, invoke, proposed
# id, created, callee, resync ("1": an existing callee is no error). Returns {error URI or "", entry, created}.
ADD = """
local raw = redis.call('HGET', KEYS[1], ARGV[3])
local e, created = nil, 0
if raw then
  e = cjson.decode(raw)
  if e.invoke ~= ARGV[4] then return {'wamp.error.procedure_exists_with_different_invocation_policy', raw, 0} end
  for _, c in ipairs(e.callees) do
    if c == ARGV[7] then
      if ARGV[8] == '1' then return {'', raw, 0} end
      return {'wamp.error.procedure_already_exists', raw, 0}
    end
  end
  if ARGV[4] == 'single' then return {'wamp.error.procedure_already_exists', raw, 0} end
  table.insert(e.callees, ARGV[7])
else
  e = {id = ARGV[5], invoke = ARGV[4], created = ARGV[6], callees = {ARGV[7]}}
  created = 1
end
local v = tostring(redis.call('INCR', KEYS[2]))
e.v = v
local out = cjson.encode(e)
redis.call('HSET', KEYS[1], ARGV[3], out)
redis.call('SADD', KEYS[3], ARGV[2] .. '\\n' .. ARGV[3])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('PUBLISH', 'cy:bus:all', cmsgpack.pack({ARGV[1], 'reg', {ARGV[2], ARGV[3], out, v}}))
return {'', out, created}
"""

# KEYS: counter, the node's index. ARGV: sender node, the node whose callees go, then triples realm,
# field, callee ("*": every callee of that node) -- or only a count: that many entries of the node's
# index, every callee of the node. Returns {entries looked at, {realm, field, entry before, entry after
# or "", removed callees, v} for each entry changed}; an entry left without callees is deleted.
REMOVE = """
local todo, out = {}, {}
local prefix = ARGV[2] .. '|'
if #ARGV == 3 then
  for _, m in ipairs(redis.call('SRANDMEMBER', KEYS[2], tonumber(ARGV[3]))) do
    local nl = string.find(m, '\\n', 1, true)
    todo[#todo + 1] = {string.sub(m, 1, nl - 1), string.sub(m, nl + 1), '*'}
  end
else
  for i = 3, #ARGV, 3 do todo[#todo + 1] = {ARGV[i], ARGV[i + 1], ARGV[i + 2]} end
end
for _, t in ipairs(todo) do
  local realm, fld, callee = t[1], t[2], t[3]
  local hash = 'cy:reg:' .. realm
  local raw = redis.call('HGET', hash, fld)
  local mine = false
  if raw then
    local e = cjson.decode(raw)
    local keep, gone = {}, {}
    for _, c in ipairs(e.callees) do
      local ours = string.sub(c, 1, #prefix) == prefix
      if c == callee or (callee == '*' and ours) then
        gone[#gone + 1] = c
      else
        keep[#keep + 1] = c
        if ours then mine = true end
      end
    end
    if #gone > 0 then
      local v = tostring(redis.call('INCR', KEYS[1]))
      local body = ''
      if #keep == 0 then
        redis.call('HDEL', hash, fld)
      else
        e.callees = keep
        e.v = v
        body = cjson.encode(e)
        redis.call('HSET', hash, fld, body)
      end
      redis.call('PUBLISH', 'cy:bus:all', cmsgpack.pack({ARGV[1], 'reg', {realm, fld, body, v}}))
      out[#out + 1] = {realm, fld, raw, body, gone, v}
    end
  end
  if not mine then redis.call('SREM', KEYS[2], realm .. '\\n' .. fld) end
end
return {#todo, out}
"""

# KEYS: counter, realms set. ARGV: at most how many entries. Returns {counter, realm, {field, entry, ...}, ...}.
SNAPSHOT = """
local out = {redis.call('GET', KEYS[1]) or '0'}
local left = tonumber(ARGV[1])
for _, realm in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if left <= 0 then break end
  local all = redis.call('HGETALL', 'cy:reg:' .. realm)
  out[#out + 1] = realm
  out[#out + 1] = all
  left = left - #all / 2
end
return out
"""


class Entry:
    """One registration of the cluster, as the view holds it: callees as (node, session id)."""

    __slots__ = ("id", "procedure", "match", "invoke", "created", "callees", "v")

    def __init__(self, procedure: str, match: str, raw: dict) -> None:
        self.id = int(raw["id"])
        self.procedure = procedure
        self.match = match
        self.invoke = raw["invoke"]
        self.created = float(raw["created"])
        callees = []
        for c in raw["callees"]:
            node, _, sid = c.rpartition("|")
            callees.append((node, int(sid)))
        self.callees: list[tuple[str, int]] = callees
        self.v = int(raw["v"])

class View:
    """Every realm's registrations of the whole cluster, from Redis's broadcasts; what CALLs route by."""

    def __init__(self, changed: Callable[[str, str, str, Entry | None], None]) -> None:
        self.changed = changed  # (realm, procedure, match, entry or None after the change)
        self.indexes: dict[str, PatternIndex[Entry]] = {}
        self.by_id: dict[str, dict[int, Entry]] = {}
        self._fields: dict[tuple[str, str], Entry] = {}
        self._tombstones: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._loading: list | None = None  # changes seen while a snapshot is read

    def index(self, realm: str) -> PatternIndex[Entry] | None:
        return self.indexes.get(realm)

    def entries(self, realm: str) -> Iterator[Entry]:
        yield from self.by_id.get(realm, {}).values()

    def apply(self, realm: str, fld: str, raw: str, v: int) -> None:
        """One change (a broadcast, or a script's answer): applied unless what the view has is newer."""
        if self._loading is not None:
            self._loading.append((realm, fld, raw, v))
        key = (realm, fld)
        old = self._fields.get(key)
        if (old is not None and old.v >= v) or self._tombstones.get(key, 0) >= v:
            return
        self._set(realm, fld, old, raw, v)

    def _set(self, realm: str, fld: str, old: Entry | None, raw: str, v: int) -> None:
        key = (realm, fld)
        if old is not None:
            match, procedure = old.match, old.procedure
        else:
            match, procedure = json.loads(fld)
        index = self.indexes.get(realm)
        if old is not None:
            index.remove(procedure, match)
            del self.by_id[realm][old.id]
            del self._fields[key]
        entry = None
        if raw:
            entry = Entry(procedure, match, json.loads(raw))
            if index is None:
                index = self.indexes[realm] = PatternIndex()
                self.by_id[realm] = {}
            index.add(procedure, match, entry)
            self.by_id[realm][entry.id] = entry
            self._fields[key] = entry
            self._tombstones.pop(key, None)
        else:
            self._tombstones[key] = v
            self._tombstones.move_to_end(key)
            if len(self._tombstones) > MAX_TOMBSTONES:
                self._tombstones.popitem(last=False)
            if index is not None and not len(index):
                del self.indexes[realm]
                del self.by_id[realm]
        self.changed(realm, procedure, match, entry)

    def drop_callee(self, realm: str, procedure: str, match: str, node: str, sid: int) -> None:
        """A local callee left: stop routing to it now, before Redis's answer (its version stays)."""
        index = self.indexes.get(realm)
        entry = index.get(procedure, match) if index is not None else None
        if entry is not None and (node, sid) in entry.callees and len(entry.callees) > 1:
            entry.callees = [c for c in entry.callees if c != (node, sid)]

    def drop_node(self, node: str) -> None:
        """A node is gone: its callees leave every entry now (Redis's cleanup follows)."""
        for key, entry in list(self._fields.items()):
            if any(n == node for n, _ in entry.callees):
                keep = [c for c in entry.callees if c[0] != node]
                if keep:
                    entry.callees = keep
                    self.changed(key[0], entry.procedure, entry.match, entry)
                else:  # a deletion at the entry's own version: the script's broadcast is newer
                    self._set(key[0], key[1], entry, "", entry.v)

    # -- reload ------------------------------------------------------------------------------------
    def begin_load(self) -> None:
        self._loading = []

    def end_load(self, reply: list | None) -> None:
        """Redis's snapshot (SNAPSHOT's answer) replaces the view; changes newer than it stay.
        None: the read failed, the view stays as it was."""
        seen, self._loading = self._loading or [], None
        if reply is None:
            return
        counter = int(reply[0])
        fresh: dict[tuple[str, str], tuple[str, int]] = {}
        for i in range(1, len(reply) - 1, 2):
            realm, flat = reply[i], reply[i + 1]
            for j in range(0, len(flat) - 1, 2):
                raw = flat[j + 1]
                fresh[(realm, flat[j])] = (raw, int(json.loads(raw)["v"]))
        for key, entry in list(self._fields.items()):
            if key not in fresh and entry.v <= counter:
                self._set(key[0], key[1], entry, "", counter)
        for (realm, fld), (raw, v) in fresh.items():
            self.apply(realm, fld, raw, v)
        for change in seen:
            self.apply(*change)

    def size(self) -> int:
        return len(self._fields)


def decode_change(body: Any) -> tuple[str, str, str, int]:
    """A REG_KIND broadcast's body → (realm, field, entry JSON or "", v)."""
    realm, fld, raw, v = body
    return realm, fld, raw, int(v)
