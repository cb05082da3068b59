"""Autobahn clients a test is done with: leave cleanly, whichever of them are still connected."""

from __future__ import annotations

from collections.abc import Iterable


def leave_connected(clients: Iterable) -> None:
    """Leave with every client still connected (the others were killed by the test)."""
    for c in clients:
        if c.is_connected():
            c.leave()
