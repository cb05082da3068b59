"""Brute-force protection for the answers to CHALLENGEs.

Checked when an AUTHENTICATE is about to be verified (not only at HELLO: a connection challenged before
the first failure would otherwise get its guess verified anyway). Failures count per (realm, address,
authid), so a guesser behind a NAT or a proxy locks out only that authid from that address, never the
other users behind it nor anonymous sessions. Verifications in flight (a ticket's PBKDF2 runs in a
thread) are capped per address and in total, so one address cannot fill the hashing pool; an answer
over a cap is refused at once instead of queued.

Memory is bounded: at most MAX_TRACKED failure and block entries each (the oldest forgotten first),
and a long authid is keyed by its digest, not its text.
"""

from __future__ import annotations

import hashlib
import time

from realms.realm import Throttle
from router import wamp
from router.auth import TOO_MANY_AUTHENTICATIONS

MAX_TRACKED = 50_000  # (realm, address, authid) keys with recent failures, and blocked ones (~300 bytes each)
MAX_KEY_AUTHID = 64  # characters of an authid kept in a key; a longer one is keyed by its digest

Key = tuple[str, str, str]


def throttle_key(realm: str, address: str, authid: str) -> Key:
    """The (realm, address, authid) a failure counts against; authids are client text, so bounded."""
    if len(authid) > MAX_KEY_AUTHID:
        authid = "sha256:" + hashlib.sha256(authid.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return realm, address, authid


class AuthThrottle:
    """One per node: the failure counts, blocks and verifications in flight of all its realms."""

    def __init__(self) -> None:
        self._failures: dict[Key, list] = {}  # key -> [first failure in the window, failures since]
        self._blocked: dict[Key, float] = {}  # key -> monotonic time the block ends
        self._pending: dict[Key, int] = {}  # verifications in flight per key
        self._per_address: dict[str, int] = {}  # ... per address
        self.in_flight = 0  # ... in total

    def blocked_for(self, key: Key, now: float | None = None) -> float:
        """Seconds this key is still refused (0: not refused)."""
        until = self._blocked.get(key)
        if until is None:
            return 0.0
        left = until - (time.monotonic() if now is None else now)
        if left <= 0:
            del self._blocked[key]
            return 0.0
        return left

    def refusal(self, key: Key, config: Throttle) -> tuple[str, str] | None:
        """Why an answer for `key` may not be verified now: (ABORT reason, message), or None."""
        if config.max_failures:
            wait = self.blocked_for(key)
            if wait:
                return wamp.NOT_AUTHORIZED, (f"too many failed authentications for this authid from this "
                                             f"address; retry in {max(wait, 1):.0f}s")
            # Answers still being verified count as failures to come: concurrent guesses get no more
            # tries than sequential ones.
            if self._recent(key, config.window) + self._pending.get(key, 0) >= config.max_failures:
                return TOO_MANY_AUTHENTICATIONS, "an earlier answer for this authid is still being verified"
        if self._per_address.get(key[1], 0) >= config.max_in_flight_per_address:
            return TOO_MANY_AUTHENTICATIONS, "too many authentications in flight from this address; retry later"
        if self.in_flight >= config.max_in_flight:
            return TOO_MANY_AUTHENTICATIONS, "too many authentications in flight; retry later"
        return None

    def begin(self, key: Key, config: Throttle) -> tuple[str, str] | None:
        """Reserve a verification slot for `key`, or say why not (see `refusal`)."""
        refused = self.refusal(key, config)
        if refused is None:
            self._pending[key] = self._pending.get(key, 0) + 1
            self._per_address[key[1]] = self._per_address.get(key[1], 0) + 1
            self.in_flight += 1
        return refused

    def end(self, key: Key, failed: bool, config: Throttle) -> None:
        """The verification `begin` allowed is over; a failure counts against the key."""
        _decrement(self._pending, key)
        _decrement(self._per_address, key[1])
        self.in_flight -= 1
        if failed and config.max_failures:
            self.failed(key, config)

    def failed(self, key: Key, config: Throttle, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        entry = self._failures.get(key)
        if entry is None or now - entry[0] > config.window:
            if entry is None and len(self._failures) >= MAX_TRACKED:
                del self._failures[next(iter(self._failures))]
            entry = self._failures[key] = [now, 0]
        entry[1] += 1
        if entry[1] >= config.max_failures:
            del self._failures[key]
            if key not in self._blocked and len(self._blocked) >= MAX_TRACKED:
                del self._blocked[next(iter(self._blocked))]
            self._blocked[key] = now + config.block_for

    def _recent(self, key: Key, window: float) -> int:
        entry = self._failures.get(key)
        if entry is None:
            return 0
        if time.monotonic() - entry[0] > window:
            del self._failures[key]
            return 0
        return entry[1]


def _decrement(counts: dict, key) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
