"""Brute-force protection for the answers to CHALLENGEs.

Checked when an AUTHENTICATE is about to be verified (not only at HELLO: a connection challenged before
the first failure would otherwise get its guess verified anyway). Failures count per (realm, address,
authid), so a guesser behind a NAT or a proxy locks out only that authid from that address, not the
other users behind it (unless it sprays many authids, below) and never anonymous sessions.
Verifications in flight (a ticket's PBKDF2 runs in a thread) are capped per address and in total, so
one address cannot fill the hashing pool. An answer over an in-flight cap waits for a slot (clients
behind one NAT or proxy logging in at once), at most `max_waiting_per_address` per address and
`MAX_WAIT` seconds; past either it is refused with courtyard.error.too_many_authentications.

An address that fails for many authids (a password spray: `max_failures` guesses for each of many
names) is blocked as a whole once its failures across all authids reach `max_failures_per_address`
(default 10 × max_failures) within the window: for `block_for`, non-anonymous authentication from it is
refused. Anonymous sessions are never affected.

Memory is bounded: at most MAX_TRACKED failure and block entries each (the oldest forgotten first),
and a long authid is keyed by its digest, not its text.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor

from realms.realm import Throttle
from router import wamp
from router.auth import TOO_MANY_AUTHENTICATIONS

MAX_TRACKED = 50_000  # (realm, address, authid) keys with recent failures, and blocked ones (~300 bytes each);
# as many (realm, address) keys again for the per-address count
MAX_WAIT = 5.0  # seconds an answer waits for a verification slot at most
MAX_WAITING = 10_000  # answers waiting for a slot in the whole node
MAX_KEY_AUTHID = 64  # characters of an authid kept in a key; a longer one is keyed by its digest

Key = tuple[str, str, str]
AddressKey = tuple[str, str]


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
        self._address_failures: dict[AddressKey, list] = {}  # (realm, address) -> the same, across authids
        self._address_blocked: dict[AddressKey, float] = {}
        self._pending: dict[Key, int] = {}  # verifications in flight per key
        self._per_address: dict[str, int] = {}  # ... per address
        self.in_flight = 0  # ... in total
        self._waiting: dict[str, deque] = {}  # address -> [retry, timer] of answers waiting for a slot
        self.waiting = 0
        self._waking = False

    def blocked_for(self, key: Key, now: float | None = None) -> float:
        """Seconds this key is still refused (0: not refused)."""
        return _left(self._blocked, key, now)

    def blocked(self, key: Key) -> str | None:
        """The ABORT text (wamp.error.not_authorized) while `key` or its whole address is blocked, else None."""
        wait = self.blocked_for(key)
        if wait:
            return f"too many failed authentications for this authid from this address; retry in {max(wait, 1):.0f}s"
        wait = _left(self._address_blocked, key[:2], None)
        if wait:
            return f"too many failed authentications from this address; retry in {max(wait, 1):.0f}s"
        return None

    def refusal(self, key: Key, config: Throttle) -> tuple[str, str] | None:
        """Why an answer for `key` may not be verified now: (ABORT reason, message), or None."""
        if config.max_failures:
            why = self.blocked(key)
            if why is not None:
                return wamp.NOT_AUTHORIZED, why
            # Answers still being verified count as failures to come: concurrent guesses get no more
            # tries than sequential ones.
            if self._recent(key, config.window) + self._pending.get(key, 0) >= config.max_failures:
                return TOO_MANY_AUTHENTICATIONS, "an earlier answer for this authid is still being verified"
            per_address = config.max_failures_per_address
            if per_address and _recent(self._address_failures, key[:2], config.window) \
                    + self._per_address.get(key[1], 0) >= per_address:
                return TOO_MANY_AUTHENTICATIONS, "earlier answers from this address are still being verified"
        if self._per_address.get(key[1], 0) >= config.max_in_flight_per_address:
            return TOO_MANY_AUTHENTICATIONS, "too many authentications in flight from this address; retry later"
        if self.in_flight >= config.max_in_flight:
            return TOO_MANY_AUTHENTICATIONS, "too many authentications in flight; retry later"
        return None

    def vet(self, key: Key, config: Throttle) -> Any:
        """A cluster's throttle answers later (a Deferred of `refusal`'s answer) from the failures of
        every node; a single node has nothing to wait for: None."""
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
        """The verification `begin` allowed is over; a failure counts against the key. Its slot goes
        to the first answer waiting from the same address (else from any address)."""
        _decrement(self._pending, key)
        _decrement(self._per_address, key[1])
        self.in_flight -= 1
        if failed and config.max_failures:
            self.failed(key, config)
        if self.waiting:
            self._wake(key[1] if key[1] in self._waiting else next(iter(self._waiting)))

    def wait(self, key: Key, config: Throttle, retry: Callable[[bool], bool]) -> bool:
        """Queue an answer that `begin` refused for an in-flight cap: `retry(True)` when a verification
        ends (it calls `begin` again, and returns False if its connection has gone), `retry(False)` after
        MAX_WAIT. False: too many wait already (refuse it now)."""
        queue = self._waiting.get(key[1])
        if (len(queue) if queue else 0) >= config.max_waiting_per_address or self.waiting >= MAX_WAITING:
            return False
        if queue is None:
            queue = self._waiting[key[1]] = deque()
        entry: list = [retry, None]
        clock: Any = reactor  # IReactorTime, which mypy reads through zope's interface without `self`
        entry[1] = clock.callLater(MAX_WAIT, self._expired, key[1], entry)
        queue.append(entry)
        self.waiting += 1
        return True

    def _take(self, address: str, entry: list | None = None) -> list | None:
        """Remove `entry` (or the first) from `address`'s queue."""
        queue = self._waiting.get(address)
        if not queue:
            return None
        if entry is None:
            entry = queue.popleft()
        else:
            queue.remove(entry)
        if not queue:
            del self._waiting[address]
        self.waiting -= 1
        return entry

    def _wake(self, address: str) -> None:
        if self._waking:  # a verification that ended at once, within a retry: the loop below goes on
            return
        self._waking = True
        try:
            for _ in range(len(self._waiting.get(address, ()))):  # bounded: a retry refused again queues anew
                entry = self._take(address)
                if entry is None:
                    return
                if entry[1].active():
                    entry[1].cancel()
                if entry[0](True):
                    return
        finally:
            self._waking = False

    def _expired(self, address: str, entry: list) -> None:
        if self._take(address, entry) is not None:
            entry[0](False)

    def failed(self, key: Key, config: Throttle, now: float | None = None) -> None:
        """A failure counts against the (address, authid) and against the address as a whole."""
        now = time.monotonic() if now is None else now
        _count(self._failures, self._blocked, key, config.max_failures, config, now)
        if config.max_failures_per_address:
            _count(self._address_failures, self._address_blocked, key[:2], config.max_failures_per_address,
                   config, now)

    def _recent(self, key: Key, window: float) -> int:
        return _recent(self._failures, key, window)


def _count(failures: dict, blocked: dict, key: tuple, limit: int, config: Throttle, now: float) -> None:
    """One failure for `key`; at `limit` within the window, `key` is blocked for block_for. Both tables
    keep at most MAX_TRACKED keys, the oldest forgotten first."""
    entry = failures.get(key)
    if entry is None or now - entry[0] > config.window:
        if entry is None and len(failures) >= MAX_TRACKED:
            del failures[next(iter(failures))]
        entry = failures[key] = [now, 0]
    entry[1] += 1
    if entry[1] >= limit:
        del failures[key]
        if key not in blocked and len(blocked) >= MAX_TRACKED:
            del blocked[next(iter(blocked))]
        blocked[key] = now + config.block_for


def _recent(failures: dict, key: tuple, window: float) -> int:
    entry = failures.get(key)
    if entry is None:
        return 0
    if time.monotonic() - entry[0] > window:
        del failures[key]
        return 0
    return entry[1]


def _left(blocked: dict, key: tuple, now: float | None) -> float:
    """Seconds `key` is still blocked (0: not blocked; an expired block is forgotten)."""
    until = blocked.get(key)
    if until is None:
        return 0.0
    left = until - (time.monotonic() if now is None else now)
    if left <= 0:
        del blocked[key]
        return 0.0
    return left


def _decrement(counts: dict, key) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
