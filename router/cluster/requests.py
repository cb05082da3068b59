"""Requests between nodes over the bus (router/cluster/bus.py): one node asks another to act on
something only that node has — a session's process lives on its session's node — and waits for the
answer. The bus is fire-and-forget, so every request is bounded in time (an answer that never comes
is `wamp.error.timeout`) and in count (at most MAX_PENDING waiting per node).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

REQUEST = "request"  # {id, op, body}: to one node
REPLY = "reply"  # {id, result} or {id, error: [uri, message]}: back to the asker
MAX_PENDING = 1000
TIMEOUT = "wamp.error.timeout"
UNAVAILABLE = "courtyard.error.node_unavailable"


class RemoteError(Exception):
    """The other node answered with an error (or none came): the URI and text to pass on."""

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(f"{uri}: {message}")
        self.uri = uri
        self.message = message


class Requests:
    log = Logger()

    def __init__(self, bus: Any, timeout: float = 10.0, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.bus = bus
        self.timeout = timeout
        self.clock = clock
        self._pending: dict[str, defer.Deferred] = {}
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        bus.on(REQUEST, self._request)
        bus.on(REPLY, self._reply)

    def serve(self, op: str, handler: Callable[[Any], Any]) -> None:
        """Answer requests `op` with handler(body): a value, a Deferred, or an exception with `uri`."""
        self._handlers[op] = handler

    def ask(self, node: str, op: str, body: Any, timeout: float | None = None) -> defer.Deferred:
        """Deferred: the other node's answer, or RemoteError."""
        if len(self._pending) >= MAX_PENDING:
            return defer.fail(RemoteError(UNAVAILABLE, f"{MAX_PENDING} requests to other nodes are waiting"))
        rid = uuid.uuid4().hex
        d = self._pending[rid] = defer.Deferred()
        seconds = timeout or self.timeout
        timer = self.clock.callLater(seconds, self._settle, rid,
                                     RemoteError(TIMEOUT, f"node {node} did not answer within {seconds:g}s"))

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(stop_timer)
        sent = defer.maybeDeferred(self.bus.send, node, REQUEST, {"id": rid, "op": op, "body": body})
        sent.addCallbacks(lambda listeners: listeners or self._settle(
            rid, RemoteError(UNAVAILABLE, f"node {node} is not listening")),
            lambda f: self._settle(rid, RemoteError(UNAVAILABLE, f"cannot reach node {node}: {f.getErrorMessage()}")))
        return d

    def _settle(self, rid: str, error: RemoteError) -> None:
        d = self._pending.pop(rid, None)
        if d is not None:
            d.errback(error)

    def _request(self, sender: str, body: Any) -> None:
        rid, op = body.get("id"), body.get("op")
        handler = self._handlers.get(op)
        if handler is None:
            d = defer.fail(RemoteError("wamp.error.no_such_procedure", f"no request {op!r} here"))
        else:
            d = defer.maybeDeferred(handler, body.get("body"))
        d.addCallbacks(lambda result: self._send(sender, {"id": rid, "result": result}),
                       lambda f: self._send(sender, {"id": rid, "error": _error(f)}))

    def _send(self, node: str, reply: dict) -> None:
        try:
            sent = self.bus.send(node, REPLY, reply)
        except (TypeError, ValueError) as e:  # an answer JSON cannot carry (bytes), or too large
            sent = self.bus.send(node, REPLY, {"id": reply["id"], "error": [
                "wamp.error.invalid_argument", f"the answer cannot cross nodes: {e}"[:300]]})
        sent.addErrback(lambda f: self.log.warn("answering node {node} failed: {e}", node=node,
                                                e=f.getErrorMessage()))

    def _reply(self, sender: str, body: Any) -> None:
        d = self._pending.pop(body.get("id"), None)
        if d is None:
            return  # timed out meanwhile
        if "error" in body:
            uri, message = (list(body["error"]) + ["", ""])[:2]
            d.errback(RemoteError(str(uri), str(message)))
        else:
            d.callback(body.get("result"))


def _error(f: Failure) -> list:
    e = f.value
    uri = getattr(e, "uri", None)
    if uri is None:
        Logger().failure("a request from another node failed", failure=f)
        return ["wamp.error.runtime_error", "the request failed; see the node's log"]
    return [uri, str(getattr(e, "message", e))]
