"""Outgoing flow control shared by the transports.

A connection registers a push producer with its TCP transport, so Twisted tells it when the socket's
write buffer is full (pause) and drained (resume). While paused, bytes written are counted; past
`max_outgoing_buffer`, EVENTs to that peer are dropped (counted, logged once per episode) or the
peer is disconnected, per `slow_consumer`. Replies and INVOCATIONs still go under the `drop`
policy: they are bounded by the peer's own requests and by max_pending_calls.
"""

from __future__ import annotations

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
        if conn._dropped_episode:
            conn.flow_log.info("peer {peer} caught up; {n} EVENTs were dropped while it lagged",
                               peer=conn.peer_name(), n=conn._dropped_episode)
            conn._dropped_episode = 0

    def stopProducing(self) -> None:
        pass


class FlowControlled:
    """Mixed into a transport protocol that has `self.transport`, `drop()` and a listener `config`."""

    flow_log = Logger()
    _paused = False
    _backlog = 0
    _dropped_episode = 0
    dropped_events = 0

    def start_flow_control(self) -> None:
        self.transport.registerProducer(_Flow(self), True)

    def peer_name(self) -> str:
        addr = self.transport.getPeer()
        return f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', 0)}"

    def may_write(self, size: int, event: bool) -> bool:
        """Account a write while the socket is backed up. True when it may go ahead."""
        if not self._paused:
            return True
        config = self.listener_config()
        limit = config.max_outgoing_buffer
        if self._backlog + size <= limit:
            self._backlog += size
            return True
        if config.slow_consumer == "disconnect":
            self.flow_log.warn("disconnecting slow consumer {peer}: over {limit} bytes queued",
                               peer=self.peer_name(), limit=limit)
            self.drop()
            return False
        if not event:
            self._backlog += size
            return True
        if not self._dropped_episode:
            self.flow_log.warn("peer {peer} reads too slowly: dropping EVENTs past {limit} bytes queued",
                               peer=self.peer_name(), limit=limit)
        self._dropped_episode += 1
        self.dropped_events += 1
        return False
