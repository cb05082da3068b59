"""Waiting for something the router does asynchronously: poll a condition, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable

from autobahn.twisted.util import sleep


async def until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "the condition", *,
                step: float = 0.02, fail: bool = True) -> bool:
    """Poll `predicate` every `step` seconds until it is true (True), for at most `timeout` seconds;
    then AssertionError naming `what` — or, with `fail=False`, False (for loops that go on either way)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            if fail:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
            return False
        await sleep(step)


def wait(predicate: Callable[[], object], timeout: float = 10.0, what: str = "the condition",
         step: float = 0.05) -> object:
    """`until` for a test outside the reactor (one driving `courtyard start` processes and blocking
    CLI calls): block until `predicate()` is truthy and return its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)
