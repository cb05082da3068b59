"""The node's connection to Redis (txredisapi, chosen by measurement: docs/performance.md, Why txredisapi).

`connect` fails fast at start: one attempt without retries, so an unreachable Redis or a refused
password becomes one clear error naming the URL; after that the long-lived connection reconnects by
itself. txredisapi queues commands issued while it is disconnected until it is back, without bound,
so callers check `connected()` and keep their own bounded state instead of queueing commands.

Reconnecting: txredisapi backs off from 1 s by a factor of e up to 10 s, so after a 5 s outage the
next attempt came up to 10 s after Redis was back (cross-node calls measured working again 8.8-18.5 s
after its return). `fast_reconnect` retries from 50 ms, doubling up to 0.5 s: one connection attempt
per node every half second while Redis is away costs nothing, and recovery starts within 0.5 s.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet import defer, reactor

from router.cluster.url import RedisTarget
from router.wamp import WampError


class RedisUnavailable(Exception):
    """Redis could not be reached (or refused us) at start."""


class ClusterUnavailable(WampError):
    """A cluster-wide read or action while Redis is away: answered at once as an error with this URI,
    not queued (txredisapi would hold it, and every one after it, until Redis is back)."""

    URI = "courtyard.error.cluster_unavailable"

    def __init__(self) -> None:
        super().__init__(self.URI, "the cluster's Redis is unreachable; this node serves its own sessions meanwhile")


RECONNECT_FIRST = 0.05  # seconds before the first reconnection attempt
RECONNECT_MAX = 0.5  # seconds between attempts at most, however long Redis is away


def fast_reconnect(factory: Any) -> Any:
    """Set a txredisapi factory's backoff (read by its ClientService on each attempt): see above."""
    factory.initialDelay, factory.factor, factory.maxDelay = RECONNECT_FIRST, 2.0, RECONNECT_MAX
    return factory


def require(conn: Any) -> None:
    """Raise ClusterUnavailable unless `conn` is connected."""
    if not connected(conn):
        raise ClusterUnavailable()


def _open(target: RedisTarget, reconnect: bool, timeout: float) -> defer.Deferred:
    common = dict(dbid=target.db, reconnect=reconnect, password=target.password, username=target.username,
                  connectTimeout=timeout, replyTimeout=timeout, charset="utf-8")
    if target.path is not None:
        return txredisapi.UnixConnection(target.path, **common)
    return txredisapi.Connection(target.host, target.port, ssl_context_factory=_tls(target), **common)


def _tls(target: RedisTarget) -> Any:
    if not target.tls:
        return False
    from twisted.internet.ssl import optionsForClientTLS

    return optionsForClientTLS(target.host)


def _endpoint(target: RedisTarget, timeout: float) -> Any:
    """A client endpoint for `target`, for connections we build ourselves (the bus's subscriber)."""
    if target.path is not None:
        from twisted.internet.endpoints import UNIXClientEndpoint

        return UNIXClientEndpoint(reactor, target.path, timeout=timeout)
    return txredisapi._makeEndpoint(target.host, target.port, timeout, _tls(target))


@defer.inlineCallbacks
def connect(target: RedisTarget, timeout: float = 5.0):
    """A reconnecting connection to `target`, after one probe that must answer PING within `timeout`."""
    try:
        probe = yield _open(target, False, timeout).addTimeout(timeout, reactor)
        try:
            yield probe.ping()
        finally:
            yield probe.disconnect()
    except Exception as e:
        raise RedisUnavailable(f"cannot reach Redis at {target.display()}: {_reason(e)}") from None
    conn = yield _open(target, True, timeout).addTimeout(timeout, reactor)
    fast_reconnect(conn._factory)
    return conn


def connected(conn: Any) -> bool:
    """True while at least one of the connection's sockets is up."""
    return bool(conn._factory.size) if conn is not None else False


def link(conn: Any) -> Any:
    """The connection's socket now (its txredisapi protocol), or None: another one than before means it
    was lost and re-established, however briefly (Redis may have restarted empty meanwhile)."""
    pool = conn._factory.pool if conn is not None else ()
    return pool[0] if pool else None


def _reason(e: Exception) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, defer.TimeoutError):
        return "no answer in time"
    return text.splitlines()[0][:200]
