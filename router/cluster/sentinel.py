"""Redis behind Sentinel: where the master is now, asked of the sentinels before every connection
attempt, and told by them (`+switch-master`) the moment a failover promotes another one.

txredisapi has a Sentinel client (`txredisapi.Sentinel`), and its connections to the sentinels are used
here, but its discovery waits `discovery_timeout` (10 s) whenever no sentinel vouches for a master —
which is exactly the state during a failover — and it queues its questions on sentinels that are down,
without bound; it also cannot speak TLS to the master and never hears `+switch-master`, so a master
demoted while alive (a manual failover, a partition healed) would keep the node's connections. So
discovery asks only the sentinels that are connected, answers as soon as one of them names a master
that no sentinel flags down, fails within `timeout` otherwise (the connection's retry comes back soon),
and every connection made through `MasterEndpoint` is dropped on `+switch-master` for our master.
"""

from __future__ import annotations

import weakref
from typing import Any

import txredisapi
from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from router.cluster.url import RedisTarget

SWITCH = "+switch-master"


class MasterNotFound(Exception):
    """No connected sentinel names a healthy master (a failover in progress, or all sentinels away)."""


def _tls(host: str, on: bool) -> Any:
    if not on:
        return False
    from twisted.internet.ssl import optionsForClientTLS

    return optionsForClientTLS(host)


class Sentinels:
    """The sentinels of one master: connections for questions, one subscriber each for `+switch-master`."""

    log = Logger()

    def __init__(self, target: RedisTarget, timeout: float) -> None:
        self.target = target
        self.name = target.master_name
        self.timeout = timeout
        self.conns = [txredisapi.lazyConnection(h, p, password=target.sentinel_password, charset="utf-8",
                                                ssl_context_factory=_tls(h, target.sentinel_tls),
                                                connectTimeout=timeout, replyTimeout=timeout)
                      for h, p in target.sentinels]
        self.master_addr: tuple[str, int] | None = None
        self._followers: weakref.WeakSet = weakref.WeakSet()  # protocols connected to the master
        self._watchers = [self._watch(h, p) for h, p in target.sentinels]
        self.switches = 0  # +switch-master heard for our master

    @defer.inlineCallbacks
    def ready(self):
        """Fires when one sentinel is connected; fails with MasterNotFound after `timeout`."""
        deadline = reactor.seconds() + self.timeout
        while not any(c._factory.size for c in self.conns):
            if reactor.seconds() > deadline:
                raise MasterNotFound("no sentinel answered")
            yield task.deferLater(reactor, 0.02, lambda: None)

    def master(self) -> defer.Deferred:
        """Deferred[(host, port)] of the master, from the first connected sentinel naming one that is not
        flagged down; MasterNotFound when none does within `timeout`."""
        up = [c for c in self.conns if c._factory.size]
        if not up:
            return defer.fail(MasterNotFound(f"no sentinel of {self.target.display()} is reachable"))
        result: defer.Deferred = defer.Deferred()
        pending = [len(up)]

        def answered(reply: Any) -> None:
            pending[0] -= 1
            if result.called:
                return
            state = dict(zip(reply[::2], reply[1::2], strict=False)) if isinstance(reply, list) else {}
            flags = set(str(state.get("flags", "")).split(","))
            if "master" in flags and not flags & {"s_down", "o_down", "disconnected"}:
                result.callback((state["ip"], int(state["port"])))
            elif not pending[0]:
                result.errback(MasterNotFound(f"no sentinel names a healthy master {self.name!r}"))

        def failed(f: Any) -> None:
            answered(None)

        for c in up:
            c.execute_command("SENTINEL", "MASTER", self.name).addCallbacks(answered, failed)
        result.addTimeout(self.timeout, reactor,
                          onTimeoutCancel=lambda *_: _raise(MasterNotFound("no sentinel answered in time")))
        result.addCallback(self._found)
        return result

    def _found(self, addr: tuple[str, int]) -> tuple[str, int]:
        if self.master_addr is not None and addr != self.master_addr:
            self.log.info("Redis master {name} is now at {host}:{port} (was {old})", name=self.name,
                          host=addr[0], port=addr[1], old=f"{self.master_addr[0]}:{self.master_addr[1]}")
            self._drop_except(addr)
        self.master_addr = addr
        return addr

    def follow(self, protocol: Any) -> Any:
        """Remember a connection to the master, to drop it when the master changes."""
        self._followers.add(protocol)
        return protocol

    def _drop_except(self, addr: tuple[str, int]) -> None:
        for p in list(self._followers):
            transport = getattr(p, "transport", None)
            peer = transport.getPeer() if transport is not None else None
            if transport is not None and (peer is None or (getattr(peer, "host", None), getattr(peer, "port", None))
                                          != addr):
                transport.loseConnection()

    def switched(self, message: str) -> None:
        """`+switch-master <name> <old ip> <old port> <new ip> <new port>`: drop what is not on the new one."""
        parts = message.split()
        if len(parts) != 5 or parts[0] != self.name or not parts[4].isdigit():
            return
        self.switches += 1
        addr = (parts[3], int(parts[4]))
        if addr != self.master_addr:
            self.log.info("Sentinel: failover of {name} to {host}:{port}: following it", name=self.name,
                          host=addr[0], port=addr[1])
        self.master_addr = addr
        self._drop_except(addr)

    def _watch(self, host: str, port: int) -> Any:
        factory = txredisapi.SubscriberFactory()
        factory.protocol = _SwitchListener
        factory.sentinels = self
        factory.password = self.target.sentinel_password
        keep_trying(factory, 2.0)  # a sentinel back is heard from within 2 s
        build = factory.buildProtocol

        def build_and_subscribe(addr: Any) -> Any:
            p = build(addr)
            p.whenConnected().addCallback(lambda proto: proto.subscribe([SWITCH])).addErrback(lambda f: None)
            return p

        factory.buildProtocol = build_and_subscribe
        factory.startConnecting(txredisapi._makeEndpoint(host, port, self.timeout,
                                                         _tls(host, self.target.sentinel_tls)))
        factory.deferred.addErrback(lambda f: None)
        return factory

    def disconnect(self) -> defer.Deferred:
        return defer.gatherResults([c.disconnect() for c in self.conns] +
                                   [w.disconnect() for w in self._watchers], consumeErrors=True)


class _SwitchListener(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        if channel == SWITCH:
            self.factory.sentinels.switched(message)


class _MasterProtocol(txredisapi.RedisProtocol):
    """A command connection that is usable only once the server says it is the master (a promoted
    replica may still say slave for a moment). Any failure of AUTH, ROLE or SELECT during a failover
    (the connection lost, LOADING, a demoted master) drops this connection and lets the factory try
    again; txredisapi's own would stop reconnecting for good on such a failure."""

    @defer.inlineCallbacks
    def connectionMade(self):
        try:
            if self.password is not None:
                reply = yield self.auth(self.password, self.username)
                if isinstance(reply, Exception):
                    raise reply
            role = yield self.role()
            if not role or role[0] != "master":
                raise MasterNotFound(f"the server is a {role and role[0]}, not the master")
            if self.dbid is not None:
                reply = yield self.select(self.dbid)
                if isinstance(reply, Exception):
                    raise reply
        except Exception as e:
            self.log.debug("a connection to the master was not usable: {e}", e=e)
            if self.transport is not None:
                self.transport.loseConnection()
            return None
        self.password = self.dbid = None  # done: the base only marks the connection ready
        yield txredisapi.RedisProtocol.connectionMade(self)
        return None

    log = Logger()


def keep_trying(factory: Any, delay: float) -> None:
    """Retry every `delay` at most, and never give up on a failure while connecting (txredisapi's
    stopTrying on a failed AUTH or SELECT, which during a failover is only a moment's state); only
    `disconnect()` stops the factory."""
    factory.initialDelay, factory.maxDelay = min(0.1, delay), delay
    factory.stopTrying = lambda: defer.succeed(None)


def master_factory(target: RedisTarget, sentinels: Sentinels, timeout: float, delay: float) -> Any:
    """The command connection's factory: to the master, wherever it is, asked before each attempt."""
    factory = txredisapi.RedisFactory(None, target.db, 1, isLazy=False, charset="utf-8", password=target.password,
                                      username=target.username, replyTimeout=timeout)
    factory.protocol = _MasterProtocol
    keep_trying(factory, delay)
    factory.startConnecting(MasterEndpoint(sentinels, target.tls, timeout))
    return factory


@implementer(IStreamClientEndpoint)
class MasterEndpoint:
    """Connects to wherever the sentinels say the master is, asking them before every attempt."""

    def __init__(self, sentinels: Sentinels, tls: bool, timeout: float) -> None:
        self.sentinels = sentinels
        self.tls = tls
        self.timeout = timeout

    def connect(self, protocol_factory: Any) -> defer.Deferred:
        def to(addr: tuple[str, int]) -> defer.Deferred:
            host, port = addr
            return txredisapi._makeEndpoint(host, port, self.timeout, _tls(host, self.tls)).connect(protocol_factory)

        return self.sentinels.master().addCallback(to).addCallback(self.sentinels.follow)


_BY_TARGET: dict[RedisTarget, Sentinels] = {}


def sentinels_for(target: RedisTarget, timeout: float) -> Sentinels:
    """One Sentinels per target in this process: the command connection and the bus share it."""
    s = _BY_TARGET.get(target)
    if s is None:
        s = _BY_TARGET[target] = Sentinels(target, timeout)
    return s


def forget(target: RedisTarget) -> defer.Deferred:
    s = _BY_TARGET.pop(target, None)
    return s.disconnect() if s is not None else defer.succeed(None)


def _raise(e: Exception) -> None:
    raise e
