"""Memory given back after a load has gone (issue 23, item 3). Freed memory inside glibc's heap is
returned to the system only from the heap's top; after a flood (52,000 subscriptions, big
publications) the freed middle stays resident until `malloc_trim` hands its pages back. Every
`TRIM_INTERVAL` seconds this node asks glibc to do so (a few milliseconds). Elsewhere than glibc:
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from twisted.internet import task
from twisted.logger import Logger

TRIM_INTERVAL = 10.0  # seconds

log = Logger()


def resident() -> int:
    """This process's resident set in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Trimmer:
    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        self._trim = getattr(libc, "malloc_trim", None)
        self.trims = 0

    def available(self) -> bool:
        return self._trim is not None

    def trim(self) -> None:
        self._trim(0)
        self.trims += 1


def start() -> Trimmer | None:
    """Trim every TRIM_INTERVAL seconds from now on (None: not glibc, nothing to do)."""
    trimmer = Trimmer()
    if not trimmer.available():
        return None
    task.LoopingCall(trimmer.trim).start(TRIM_INTERVAL, now=False)
    return trimmer
