"""Memory given back after a load has gone (issue 23, "memory is not given back").

Two things keep a node's resident set up once a load (big publications, a 52,000-subscription flood,
Redis connections dropped under it) has gone, neither of them a live object of ours:

- Garbage in reference cycles: a failed Deferred keeps its Failure, whose traceback keeps its frames and
  their locals (thousands of them when a Redis connection with commands in flight is dropped). CPython
  collects such cycles in its oldest generation only once enough new objects have been allocated, so in
  a process that has gone quiet they stay, and pin the allocator's arenas, forever.
- Freed memory inside glibc's heap: handed back to the system only from the heap's top, until
  `malloc_trim` returns the free pages in the middle.

Every `TRIM_INTERVAL` seconds the Trimmer looks at how many youngest-generation collections ran since
its last look: at `QUIET` or more the node is busy (CPython's own collections keep up with its garbage);
on the first quiet look after a busy one — a load has just gone — it runs a full collection. Then, every
time, it asks glibc to trim (a few milliseconds). Elsewhere than glibc: the collection only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

from twisted.internet import task
from twisted.logger import Logger

TRIM_INTERVAL = 5.0  # seconds
# Youngest-generation collections per TRIM_INTERVAL under which the node counts as quiet: one runs per
# ~700 objects allocated and not freed; an idle cluster node (heartbeats every 0.2 s, the bus probe)
# made none in 5 s (measured 2026-12-07).
QUIET = 20

log = Logger()


def resident() -> int:
    """This process's resident set in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _young_collections() -> int:
    return gc.get_stats()[0]["collections"]


class Trimmer:
    """Full collection once a load has gone, then glibc's trim; `tick` every TRIM_INTERVAL seconds."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        self._trim = getattr(libc, "malloc_trim", None)
        self.trims = 0
        self.collections = 0  # full collections run because a load had gone
        self._seen = _young_collections()
        self._busy = False

    def available(self) -> bool:
        """Whether this is glibc (the trim is there)."""
        return self._trim is not None

    def tick(self) -> None:
        """Collect if the node went quiet since the last tick after a busy one; trim."""
        seen = _young_collections()
        recent, self._seen = seen - self._seen, seen
        if recent >= QUIET:
            self._busy = True
        elif self._busy:  # the load has gone: its garbage in cycles would stay until the next one
            self._busy = False
            found = gc.collect()
            self.collections += 1
            self._seen = _young_collections()
            log.debug("a load has gone: collected {n} objects in cycles", n=found)
        self.trim()

    def trim(self) -> None:
        """Free pages inside glibc's heap back to the system (nothing elsewhere)."""
        if self._trim is not None:
            self._trim(0)
            self.trims += 1


def start() -> Trimmer:
    """Tick every TRIM_INTERVAL seconds from now on."""
    trimmer = Trimmer()
    task.LoopingCall(trimmer.tick).start(TRIM_INTERVAL, now=False)
    return trimmer

