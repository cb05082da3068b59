"""The session-process class of `scripts/bench --scenarios process`: answers a call with its request,
so a `courtyard.process.call` round trip costs what the router adds, as `bench.echo` does for RPC."""

from __future__ import annotations

from typing import Any


class Echo:
    def init(self, session_details: dict, arg: Any) -> None:
        self.calls = 0

    def handle_call(self, request: Any) -> Any:
        self.calls += 1
        return request

    def handle_cast(self, request: Any) -> None:
        self.calls += 1

    def terminate(self, reason: str) -> None:
        pass
