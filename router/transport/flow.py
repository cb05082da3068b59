"""Outgoing flow control shared by the transports: one byte budget per peer, for every message.

A connection registers a push producer with its TCP transport, so Twisted tells it when the socket's
write buffer is full (pause) and drained (resume). While paused, bytes written are counted against the
peer's budget, `max_outgoing_buffer`:
- **bulk** messages (EVENT, INVOCATION, RESULT, ERROR with a payload, PONG on either transport) past the budget
  are refused: the caller of `admit` drops an EVENT (counted, logged once per episode) and fails a call
  (see WampProtocol.send);
- **control** messages (the short answers: SUBSCRIBED, ERROR without payload, INTERRUPT, GOODBYE, …)
  may use a reserve of a quarter of the budget beyond it (at least 64 KiB), so that the peer can still
  be told why its call failed;
- control messages past the reserve are **held** and written as the peer drains, and meanwhile nothing
  more is read from the peer: a burst the router makes itself (a callee with 100,000 pending calls
  leaving: 100,000 ERRORs to their caller at once) reaches a peer that keeps reading, whatever its size,
  while a peer can no longer make the router answer requests it does not read. Held bytes are capped
  (`max_held`: four budgets, at least 16 MiB);
- a peer past that cap, or that drains nothing for `slow_consumer_timeout` seconds while past its
  budget, is disconnected; under `slow_consumer: disconnect`, so is one sent a bulk message past the
  budget. Slowness is judged by how fast a peer drains, not by the size of a burst.
So a peer that stops reading costs the router at most budget + reserve bytes for what it asks for,
and what the router owes it on top is bounded by the cap.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer


@implementer(IPushProducer)
class _Flow:
    __slots__ = ("conn",)

    def __init__(self, conn: FlowControlled) -> None:
        self.conn = conn

    def pauseProducing(self) -> None:
        self.conn._paused = True

    def resumeProducing(self) -> None:
        conn = self.conn
        conn._paused = False
        conn._backlog = 0
        conn._over_since = 0.0
        conn._cancel_overdue()
        if conn._held:
            conn._write_held()
            if conn._held:
                return  # still owing: caught up only once the held messages are written
        if conn._dropped_episode:
            conn.flow_log.info("peer {peer} caught up; {n} messages were dropped while it lagged",
                               peer=conn.peer_name(), n=conn._dropped_episode)
            conn._dropped_episode = 0

    def stopProducing(self) -> None:
        pass


def reserve(budget: int) -> int:
    """Bytes of control messages a peer past its budget may still be sent."""
    return max(64 * 1024, budget // 4)


def max_held(budget: int) -> int:
    """Bytes of control messages past the reserve held for a peer that drains (written as it does)."""
    return max(16 * 1024 * 1024, 4 * budget)


HELD = "held"  # admit's answer: the caller hands the write to `hold` instead of writing now


class FlowControlled:
    """Mixed into a transport protocol that has `self.transport`, `drop()`, a listener `config` and a
    `factory.node` (whose `stats` count drops and disconnects)."""

    flow_log = Logger()
    _paused = False
    _gone = False  # dropped for reading too slowly: nothing more is written
    _backlog = 0
    _over_since = 0.0  # monotonic time the backlog first went past the budget in this episode
    _dropped_episode = 0
    _overdue = None  # DelayedCall: disconnects a peer still past its budget after slow_consumer_timeout
    dropped_events = 0  # bulk messages refused, for operators and tests
    _held: deque | None = None  # (write, size) of control messages past the reserve, oldest first
    _held_bytes = 0
    _reading_paused = False
    held_most = 0  # the most bytes ever held at once, for tests

    def start_flow_control(self) -> None:
        self.transport.registerProducer(_Flow(self), True)

    def peer_name(self) -> str:
        addr = self.transport.getPeer()
        return f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', 0)}"

    def admit(self, size: int, bulk: bool) -> bool | str:
        """Account a write of `size` bytes. True when it may go ahead; HELD when the caller must pass
        it to `hold` (a control message past the reserve, or behind held ones); False when it was
        refused (and the peer possibly disconnected)."""
        if not self._paused and not self._held:
            return not self._gone
        if self._gone:
            return False
        config = self.listener_config()
        budget = config.max_outgoing_buffer
        backlog = self._backlog + size
        if backlog <= budget and not self._held:
            self._backlog = backlog
            return True
        now = time.monotonic()
        if not self._over_since:
            self._over_since = now
            # A peer that asks for nothing more is never written to again: a timer, not the next write,
            # ends it if it is still behind when the timeout is up.
            self._overdue = reactor.callLater(config.slow_consumer_timeout, self._still_behind)
        if (bulk and config.slow_consumer == "disconnect") or now - self._over_since > config.slow_consumer_timeout:
            self._give_up(budget)
            return False
        if not bulk:
            if self._held or backlog > budget + reserve(budget):
                if self._held_bytes + size > max_held(budget):
                    self._give_up(budget)
                    return False
                return HELD
            self._backlog = backlog
            return True
        if not self._dropped_episode:
            self.flow_log.warn("peer {peer} reads too slowly: refusing messages past {limit} bytes queued",
                               peer=self.peer_name(), limit=budget)
        self._dropped_episode += 1
        self.dropped_events += 1
        self.factory.node.stats.slow_drops += 1
        return False

    def hold(self, write: Callable[[], None], size: int) -> None:
        """Keep a control message that `admit` answered HELD, to be written once the peer drains; and
        read nothing more from the peer meanwhile (it cannot make the router owe it more)."""
        if self._held is None:
            self._held = deque()
        self._held.append((write, size))
        self._held_bytes += size
        self.held_most = max(self.held_most, self._held_bytes)
        if not self._reading_paused:
            pause = getattr(self.transport, "pauseProducing", None)
            if pause is not None:
                self._reading_paused = True
                pause()

    def _write_held(self) -> None:
        """The peer drained: write held messages until its buffer is full again (Twisted pauses us)."""
        held = self._held
        if held is None:
            return
        for _ in range(len(held)):  # bounded: at most what is held now
            if self._paused or self._gone or not held:
                break
            write, size = held.popleft()
            self._held_bytes -= size
            write()
        if held and not self._gone:  # paused again with more to write: the peer must drain again in time
            self._over_since = time.monotonic()
            self._cancel_overdue()
            self._overdue = reactor.callLater(self.listener_config().slow_consumer_timeout, self._still_behind)
        elif not held:
            self._held = None
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            resume = getattr(self.transport, "resumeProducing", None)
            if resume is not None and not self._gone:
                resume()

    def _still_behind(self) -> None:
        self._overdue = None
        if self._paused and self._over_since and not self._gone:
            self._give_up(self.listener_config().max_outgoing_buffer)

    def _give_up(self, budget: int) -> None:
        self.flow_log.warn("disconnecting slow consumer {peer}: over {limit} bytes queued",
                           peer=self.peer_name(), limit=budget)
        self.factory.node.stats.slow_disconnects += 1
        self._paused, self._gone, self._backlog = False, True, 0
        self._held, self._held_bytes = None, 0
        self._cancel_overdue()
        self.drop()

    def _cancel_overdue(self) -> None:
        if self._overdue is not None:
            if self._overdue.active():
                self._overdue.cancel()
            self._overdue = None

    def free_write_buffer(self) -> None:
        """Forget what a departed peer never read, now rather than when a GC round breaks the cycles
        between protocol, transport and session (and its slow-consumer timer)."""
        self._cancel_overdue()
        self._held, self._held_bytes = None, 0
        transport = self.transport
        if transport is not None and hasattr(transport, "_tempDataBuffer"):
            transport.dataBuffer = b""
            transport._tempDataBuffer = []
            transport._tempDataLen = 0
