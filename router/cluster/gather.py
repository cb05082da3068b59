"""Ask every node one question and gather their answers over the bus (scatter-gather).

Why: what only a node knows exactly (its own sessions, from the moment WELCOME is sent until
GOODBYE is processed) is best asked of that node, rather than read from a mirror that lags it.
One broadcast PUBLISH asks every listening node; each answers the asker on its own channel. Redis
keeps one connection's order, so a question sent after a KILL reaches each node after that KILL.

When to stop waiting: PUBLISH says how many listeners got the question (this node's listener
included, which answers itself without a message), and `cy:nodes` says which nodes are in the
cluster; the gathering ends once every listener or every node has answered, or after `timeout`.
The nodes of `cy:nodes` that did not answer by then (stalled, reconnecting, dead but not purged
yet) are `silent`: the caller reads their sessions from their Redis mirror instead.

Bounded: at most MAX_ASKING questions wait for answers; past it, asking fails at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor
from twisted.logger import Logger

from router.cluster.connection import ClusterUnavailable, require
from router.cluster.membership import MAX_NODES, NODES

ASK = "gather.ask"  # broadcast: [question id, question, body]
ANSWER = "gather.answer"  # to the asker: [question id, answer]
MAX_ASKING = 10_000
TIMEOUT = 1.0  # seconds a question waits for the nodes' answers at most


class _Gathering:
    __slots__ = ("answers", "listeners", "nodes", "enough", "d", "timer")

    def __init__(self, enough: Callable[[Any], bool] | None) -> None:
        self.answers: dict[str, Any] = {}
        self.listeners: int | None = None  # how many got the question (PUBLISH's answer)
        self.nodes: set[str] | None = None  # the cluster's nodes (cy:nodes)
        self.enough = enough
        self.d: defer.Deferred = defer.Deferred()
        self.timer: Any = None


class Gather:
    log = Logger()

    def __init__(self, bus: Any, redis: Any, node_id: str, timeout: float = TIMEOUT) -> None:
        self.bus = bus
        self.redis = redis
        self.node_id = node_id
        self.timeout = timeout
        self._questions: dict[str, Callable[[Any], Any]] = {}
        self._asking: dict[int, _Gathering] = {}
        self._ids = itertools.count(1)
        bus.on(ASK, self._asked)
        bus.on(ANSWER, self._answered)

    def answer(self, question: str, handler: Callable[[Any], Any]) -> None:
        """Answer `question` with `handler(body)` (synchronous: what this node knows now)."""
        self._questions[question] = handler

    def ask(self, question: str, body: Any, enough: Callable[[Any], bool] | None = None) -> defer.Deferred:
        """Deferred[(answers, silent)]: the other nodes' answers by node id, and the nodes that gave
        none in time. `enough(answer)` true for one answer ends the gathering at once (a lookup)."""
        require(self.redis)
        if len(self._asking) >= MAX_ASKING:
            return defer.fail(ClusterUnavailable())
        qid = next(self._ids)
        g = self._asking[qid] = _Gathering(enough)
        g.timer = reactor.callLater(self.timeout, self._finish, qid)
        self.bus.broadcast(ASK, [qid, question, body]).addCallbacks(
            lambda n: self._heard(qid, listeners=int(n)), lambda f: self._failed(qid, f))
        self.redis.smembers(NODES).addCallbacks(
            lambda ids: self._heard(qid, nodes=set(sorted(ids)[:MAX_NODES])), lambda f: self._failed(qid, f))
        return g.d

    def _asked(self, sender: str, body: list) -> None:
        qid, question, value = body
        if sender == self.node_id:  # our own question: the asker has this node's answer already
            self._answered(sender, [qid, None])
            return
        handler = self._questions.get(question)
        if handler is None:
            return
        try:
            answer = handler(value)
        except Exception:
            self.log.failure("answering {question} for node {node} failed", question=question, node=sender)
            return
        self.bus.send(sender, ANSWER, [qid, answer]).addErrback(
            lambda f: self.log.warn("answer to {question} for node {node} not sent: {e}", question=question,
                                    node=sender, e=f.getErrorMessage()))

    def _answered(self, sender: str, body: list) -> None:
        qid, answer = body
        g = self._asking.get(qid)
        if g is None:
            return  # too late: that node is silent for this question
        g.answers[sender] = answer
        if sender != self.node_id and g.enough is not None and g.enough(answer):
            self._finish(qid, complete=True)
            return
        self._check(qid, g)

    def _heard(self, qid: int, listeners: int | None = None, nodes: set[str] | None = None) -> None:
        g = self._asking.get(qid)
        if g is None:
            return
        if listeners is not None:
            g.listeners = listeners
        if nodes is not None:
            g.nodes = nodes
        self._check(qid, g)

    def _check(self, qid: int, g: _Gathering) -> None:
        if g.nodes is None:
            return
        if (g.listeners is not None and len(g.answers) >= g.listeners) or g.nodes <= g.answers.keys() | {self.node_id}:
            self._finish(qid)

    def _failed(self, qid: int, failure: Any) -> None:
        g = self._asking.pop(qid, None)
        if g is None:
            return
        if g.timer.active():
            g.timer.cancel()
        g.d.errback(failure)

    def _finish(self, qid: int, complete: bool = False) -> None:
        g = self._asking.pop(qid, None)
        if g is None:
            return
        if g.timer.active():
            g.timer.cancel()
        g.answers.pop(self.node_id, None)
        silent = set() if complete or g.nodes is None else g.nodes - g.answers.keys() - {self.node_id}
        if silent:
            self.log.debug("nodes {nodes} did not answer in time", nodes=sorted(silent))
        g.d.callback((g.answers, silent))

    def stop(self) -> None:
        for qid in list(self._asking):
            self._failed(qid, ClusterUnavailable())
