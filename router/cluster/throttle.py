"""The auth failure throttle across a cluster (issue 12, point 6): failures on every node count
together, so a guesser spreading its tries over the nodes gets no more than on one.

Each node keeps its own throttle (router/auth/throttle.py) exactly as on a single node, and also
counts each failure in Redis: INCR of a key per (realm, address, authid) and per (realm, address),
expiring `window` after the first failure; at the limit a block key is set for `block_for` (one Lua
script, so two nodes failing at once cannot both miss the limit). Before an answer is verified the
node reads the block keys and the counts (one pipeline, at most VET_TIMEOUT seconds); a block found
there is also kept locally, so the next HELLO for that key is refused at once.

Redis away or slow: the local throttle alone decides (the same answers as a single node), and
failures meanwhile are counted locally only. Verifications in flight are capped per node.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.logger import Logger

from realms.realm import Throttle
from router import wamp
from router.auth import TOO_MANY_AUTHENTICATIONS
from router.auth.throttle import MAX_TRACKED, AuthThrottle, Key
from router.cluster.connection import connected

VET_TIMEOUT = 0.5  # seconds an answer waits for Redis's counts before the local throttle decides alone

# KEYS: failures and block of the (realm, address, authid), the same of the (realm, address).
# ARGV: window ms, block ms, max failures, max failures per address (0: not counted).
_FAILED = """
local function count(failures, block, limit)
  local n = redis.call('INCR', failures)
  if n == 1 then redis.call('PEXPIRE', failures, ARGV[1]) end
  if n >= limit then
    redis.call('DEL', failures)
    redis.call('SET', block, '1', 'PX', ARGV[2])
  end
end
count(KEYS[1], KEYS[2], tonumber(ARGV[3]))
if tonumber(ARGV[4]) > 0 then count(KEYS[3], KEYS[4], tonumber(ARGV[4])) end
return 1
"""

# KEYS as for _FAILED: the blocks' milliseconds left (<= 0: none) and the failures counted.
_READ = """
return {redis.call('PTTL', KEYS[2]), redis.call('PTTL', KEYS[4]),
        tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(redis.call('GET', KEYS[3]) or '0')}
"""


def _digest(key: tuple) -> str:
    """Client text (address, authid) in a key of fixed length: no separator to forge, no size to grow."""
    return hashlib.sha256(json.dumps(key).encode("utf-8", "surrogatepass")).hexdigest()[:40]


def redis_keys(key: Key) -> list[str]:
    """[failures, block] of the key, then [failures, block] of its (realm, address)."""
    k, a = _digest(key), _digest(key[:2])
    return [f"cy:tf:{k}", f"cy:tb:{k}", f"cy:taf:{a}", f"cy:tab:{a}"]


class ClusterThrottle(AuthThrottle):
    log = Logger()

    def __init__(self, redis: Any) -> None:
        super().__init__()
        self.redis = redis

    def failed(self, key: Key, config: Throttle, now: float | None = None) -> None:
        super().failed(key, config, now)
        if connected(self.redis):  # away: not queued (txredisapi would hold it without bound)
            self.redis.execute_command(
                "EVAL", _FAILED, 4, *redis_keys(key), int(config.window * 1000), max(1, int(config.block_for * 1000)),
                config.max_failures, config.max_failures_per_address or 0).addErrback(self._failed)

    def vet(self, key: Key, config: Throttle) -> defer.Deferred | None:
        """Deferred[(ABORT reason, message) or None]: the cluster's failures for `key`."""
        if not config.max_failures or not connected(self.redis):
            return None
        out: defer.Deferred = defer.Deferred()

        def answer(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if not out.called:
                out.callback(result)

        timer = reactor.callLater(VET_TIMEOUT, answer, None)
        self._read(key, config).addErrback(lambda f: self._failed(f)).addBoth(answer)
        return out

    @defer.inlineCallbacks
    def _read(self, key: Key, config: Throttle):
        failures, block, address_failures, address_block = redis_keys(key)
        blocked_ms, address_blocked_ms, n, n_address = yield self.redis.execute_command(
            "EVAL", _READ, 4, failures, block, address_failures, address_block)
        now = time.monotonic()
        if blocked_ms and blocked_ms > 0:
            self._keep(self._blocked, key, now + blocked_ms / 1000)
        if config.max_failures_per_address and address_blocked_ms and address_blocked_ms > 0:
            self._keep(self._address_blocked, key[:2], now + address_blocked_ms / 1000)
        why = self.blocked(key)
        if why is not None:
            return wamp.NOT_AUTHORIZED, why
        if int(n or 0) + self._pending.get(key, 0) >= config.max_failures:
            return TOO_MANY_AUTHENTICATIONS, "an earlier answer for this authid is still being verified"
        per_address = config.max_failures_per_address
        if per_address and int(n_address or 0) + self._per_address.get(key[1], 0) >= per_address:
            return TOO_MANY_AUTHENTICATIONS, "earlier answers from this address are still being verified"
        return None

    @staticmethod
    def _keep(blocked: dict, key: tuple, until: float) -> None:
        if key not in blocked and len(blocked) >= MAX_TRACKED:
            del blocked[next(iter(blocked))]
        blocked[key] = max(until, blocked.get(key, 0.0))

    def _failed(self, failure: Any) -> None:
        self.log.debug("cluster auth throttle: Redis failed ({e}); the local throttle decides",
                       e=failure.getErrorMessage())
        return None
