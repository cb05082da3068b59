"""Brute-force protection: an address with too many failed authentications in a window is refused
for a while, so secrets cannot be guessed at line rate."""

from __future__ import annotations

import time
from collections import deque


class FailureThrottle:
    MAX_TRACKED = 100_000  # addresses; the oldest are forgotten first (bounded memory)

    def __init__(self) -> None:
        self._failures: dict[str, deque] = {}
        self._blocked: dict[str, float] = {}

    def blocked_for(self, address: str, now: float | None = None) -> float:
        """Seconds this address is still refused (0: not refused)."""
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - (time.monotonic() if now is None else now)
        if left <= 0:
            del self._blocked[address]
            return 0.0
        return left

    def failed(self, address: str, max_failures: int, window: float, block_for: float,
               now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        recent = self._failures.get(address)
        if recent is None:
            if len(self._failures) >= self.MAX_TRACKED:
                del self._failures[next(iter(self._failures))]
            recent = self._failures[address] = deque(maxlen=max_failures)
        recent.append(now)
        while recent and now - recent[0] > window:
            recent.popleft()
        if len(recent) >= max_failures:
            self._blocked[address] = now + block_for
            recent.clear()
