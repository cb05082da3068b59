"""sd_notify: tell systemd (a `Type=notify` unit) that the node is ready, reloading or stopping.

The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by `NOTIFY_SOCKET` (a
path, or `@name` in the abstract namespace); without the variable every call does nothing. Twisted
has no built-in for it and libsystemd's binding is not worth a dependency for a sendto.
"""

from __future__ import annotations

import os
import socket
import time

MAX_DATAGRAM = 4096  # what one notification may take: a few short lines


def _address(name: str) -> str | bytes:
    return b"\0" + name[1:].encode() if name.startswith("@") else name


def notify(*lines: str) -> bool:
    """Send `lines` to systemd; False when there is no NOTIFY_SOCKET or it cannot be reached (never raises:
    a node must not fail because its supervisor went away)."""
    name = os.environ.get("NOTIFY_SOCKET")
    if not name or not lines:
        return False
    payload = "\n".join(lines).encode()[:MAX_DATAGRAM]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(payload, _address(name))
    except OSError:
        return False
    return True


def monotonic_usec() -> str:
    """MONOTONIC_USEC=…, which systemd wants with RELOADING=1 (CLOCK_MONOTONIC, microseconds)."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def ready(status: str) -> bool:
    """The node listens and serves: READY=1, with its pid (the supervisor's, with workers) and a status line."""
    return notify("READY=1", f"MAINPID={os.getpid()}", f"STATUS={status}"[:200])


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping: saying GOODBYE to the sessions")
