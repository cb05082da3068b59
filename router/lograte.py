"""Refusal log lines an attacker cannot grow: the first refusal of one kind from one source (a session,
an address) is logged as it is; further ones within `INTERVAL` are only counted, and one line per
interval says how many there were ("… 812 more like this in the last 60 s"). Every site that logs a
per-request or per-connection refusal goes through `refused`, so 90,000 refused SUBSCRIBEs write two
lines, not 90,000.

Bounded: at most `MAX_SOURCES` (kind, source) entries are tracked; past that, new sources of a kind
share one entry (their first line is still written once per interval for the kind).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.logger import Logger, LogLevel

INTERVAL = 60.0  # seconds a summary covers
MAX_SOURCES = 10_000
_OTHERS = "(others)"

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


class RefusalLog:
    """One per process (`refusals`); tests may make their own with a short interval."""

    def __init__(self, interval: float = INTERVAL, max_sources: int = MAX_SOURCES) -> None:
        self.interval = interval
        self.max_sources = max_sources
        # (kind, source) -> [logger, level, format, fields of the first line, count since it]
        self._seen: dict[tuple[str, Any], list] = {}
        self._timer: Any = None
        self.suppressed = 0  # lines not written (counted in a summary instead), for tests and operators

    def refused(self, log: Logger, level: str, kind: str, source: Any, format: str, **fields: Any) -> None:
        """Log `format` for the first refusal of `kind` from `source` in this interval; count the others."""
        key = (kind, source)
        entry = self._seen.get(key)
        if entry is None and len(self._seen) >= self.max_sources:
            key = (kind, _OTHERS)
            entry = self._seen.get(key)
        if entry is not None:
            entry[4] += 1
            self.suppressed += 1
            return
        self._seen[key] = [log, level, format, fields, 0]
        log.emit(_LEVELS[level], format, **fields)
        if self._timer is None:
            self._timer = reactor.callLater(self.interval, self._summarise)

    def _summarise(self) -> None:
        """The interval is over: one line per (kind, source) that was refused again, and a new interval."""
        self._timer = None
        seen, self._seen = self._seen, {}
        for log, level, format, fields, count in seen.values():
            if count:
                log.emit(_LEVELS[level], "{lograte_count} more like this in the last {lograte_interval:g} s: " + format,
                         lograte_count=count, lograte_interval=self.interval, **fields)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


refusals = RefusalLog()


def refused(log: Logger, level: str, kind: str, source: Any, format: str, **fields: Any) -> None:
    """`refusals.refused`: the helper every refusal log site calls."""
    refusals.refused(log, level, kind, source, format, **fields)


def host(peer: str) -> str:
    """The address part of a "host:port" peer name: refusals are summarised per address, not per connection."""
    return peer.rsplit(":", 1)[0]
