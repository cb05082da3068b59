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

from dataclasses import replace
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


def drop_connections(conn: Any) -> int:
    """Abort every live connection of a txredisapi pool (its slots reconnect, asking the sentinels
    again): for a connection that is up but answers nothing. Returns how many were dropped."""
    factory = getattr(conn, "_factory", conn)
    pool = list(getattr(factory, "pool", ()) or ())
    for proto in pool:
        proto.transport.abortConnection()
    return len(pool)


def _tls(target: RedisTarget) -> Any:
    if not target.tls:
        return False
    from twisted.internet.ssl import optionsForClientTLS

    return optionsForClientTLS(target.host)


def _endpoint(target: RedisTarget, timeout: float) -> Any:
    """A client endpoint for `target`, for connections we build ourselves (the bus's subscriber)."""
    if target.sentinels:
        from router.cluster.sentinel import MasterEndpoint, sentinels_for

        return MasterEndpoint(sentinels_for(target, timeout), target.tls, timeout)
    if target.path is not None:
        from twisted.internet.endpoints import UNIXClientEndpoint

        return UNIXClientEndpoint(reactor, target.path, timeout=timeout)
    return txredisapi._makeEndpoint(target.host, target.port, timeout, _tls(target))


@defer.inlineCallbacks
def connect(target: RedisTarget, timeout: float = 5.0):
    """A reconnecting connection to `target`, after one probe that must answer PING within `timeout`."""
    if target.sentinels:
        conn = yield _connect_sentinel(target, timeout)
        return conn
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


SENTINEL_RETRY_MAX = 0.5  # seconds between attempts to reach a master that moved: a failover is short


def follow_failovers(factory: Any, target: RedisTarget) -> None:
    """Behind Sentinel, a connection of ours (the bus's subscriber) retries every SENTINEL_RETRY_MAX
    seconds rather than backing off to txredisapi's 10: a failover lasts a second or two, and each
    attempt costs one question to the sentinels."""
    if target.sentinels:
        from router.cluster.sentinel import keep_trying

        keep_trying(factory, SENTINEL_RETRY_MAX)


@defer.inlineCallbacks
def _connect_sentinel(target: RedisTarget, timeout: float):
    """Behind Sentinel: the sentinels name the master, which must answer ROLE as a master (with the
    password) within `timeout`; then a connection that asks the sentinels again before every reconnect."""
    from router.cluster.sentinel import master_factory, sentinels_for

    sentinels = sentinels_for(target, timeout)
    try:
        yield sentinels.ready()
        host, port = yield sentinels.master()
        probe = yield _open(replace(target, host=host, port=port, sentinels=()), False, timeout).addTimeout(
            timeout, reactor)
        try:
            role = yield probe.role()
        finally:
            yield probe.disconnect()
        if not role or role[0] != "master":
            raise RedisUnavailable(f"the sentinels name {host}:{port}, which is a {role and role[0]}")
    except Exception as e:
        raise RedisUnavailable(f"cannot reach Redis at {target.display()}: {_reason(e)}") from None
    factory = master_factory(target, sentinels, timeout, SENTINEL_RETRY_MAX)
    conn = yield factory.deferred.addTimeout(timeout, reactor)
    return conn


def on_reconnect(conn: Any, callback: Any) -> None:
    """Run `callback()` each time `conn` is connected again (a restart, a failover to another master):
    what Redis may have lost meanwhile is the caller's to write again."""
    factory = conn._factory
    add = factory.addConnection

    def added(c: Any) -> None:
        add(c)
        if c in factory.pool:
            callback()

    factory.addConnection = added


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
