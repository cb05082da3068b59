"""Session-process classes for tests/test_processes.py (imported by path, as a user's would be)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task

from router.processes import SessionProcess

ENDED: list[tuple[int, str]] = []  # (session id, terminate reason), for the endings a client cannot see


class Counter(SessionProcess):
    """State across calls; `crash`, `sleep`, `publish`, `call` and `order` show the router's behaviour."""

    def init(self, session_details: dict, arg: Any) -> None:
        self.n = arg if isinstance(arg, int) else 0
        self.order: list = []
        self.authid = session_details["authid"]

    def handle_call(self, request: Any) -> Any:
        op = request.get("op") if isinstance(request, dict) else request
        self.order.append(request.get("tag") if isinstance(request, dict) else request)
        if op == "add":
            self.n += request.get("by", 1)
            return self.n
        if op == "get":
            return {"n": self.n, "authid": self.authid, "session": self.session_id}
        if op == "order":
            return self.order
        if op == "crash":
            raise ValueError("boom: the handler broke")
        if op == "crash_later":
            return task.deferLater(reactor, 0.01, _raise)
        if op == "sleep":  # a Deferred answered later
            return task.deferLater(reactor, request["seconds"], lambda: self.n)
        if op == "coro":
            return self._coro()
        if op == "publish":
            self.realm.publish(request["topic"], self.n, who=self.authid)
            return None
        if op == "call":
            return self.realm.call(request["procedure"], *request.get("args", []))
        return {"unknown": op}

    async def _coro(self) -> int:
        await task.deferLater(reactor, 0.01, lambda: None)
        return self.n * 10

    def handle_cast(self, request: Any) -> None:
        self.order.append(request.get("tag") if isinstance(request, dict) else request)
        if isinstance(request, dict) and request.get("op") == "add":
            self.n += request.get("by", 1)

    def terminate(self, reason: str) -> None:
        ENDED.append((self.session_id, reason))
        if self.realm is not None:
            self.realm.publish("test.proc.ended", self.session_id, reason)


def _raise() -> None:
    raise RuntimeError("boom later")


class Idle(SessionProcess):
    """The smallest process: what an idle one costs (scripts/bench, the churn test)."""

    def init(self, session_details: dict, arg: Any) -> None:
        self.n = 0

    def handle_call(self, request: Any) -> Any:
        self.n += 1
        return self.n


class Faulty(SessionProcess):
    """Breaks where the router must hold: in init (when asked) and in terminate."""

    def init(self, session_details: dict, arg: Any) -> None:
        if arg == "fail":
            raise RuntimeError("init broke")

    def handle_call(self, request: Any) -> Any:
        return request

    def terminate(self, reason: str) -> None:
        raise RuntimeError("terminate broke")


class Unbuildable(SessionProcess):
    def __init__(self) -> None:
        raise RuntimeError("no instance for you")

    def handle_call(self, request: Any) -> Any:
        return request
