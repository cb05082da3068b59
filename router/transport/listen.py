"""Open a listener through a Twisted server endpoint (`tcp:` from host and port, or the listener's
`endpoint`: `unix:`, `systemd:`), TLS wrapped around its factory when the listener has `tls`, exactly
as `SSL4ServerEndpoint` does it."""

from __future__ import annotations

from twisted.internet import endpoints, reactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from router.config import ListenerConfig


def endpoint_string(lc: ListenerConfig) -> str:
    """The listener's endpoint description; the host is quoted (an IPv6 address has colons)."""
    if lc.endpoint is not None:
        return lc.endpoint
    return f"tcp:port={lc.port}:interface={endpoints.quoteStringArgument(lc.host)}"


def listen(lc: ListenerConfig, factory: Factory) -> IListeningPort:
    """Listen now (tcp, unix and systemd endpoints answer at once); an address in use raises as
    listenTCP would."""
    if lc.tls is not None:
        factory = TLSMemoryBIOFactory(lc.tls.options, False, factory)
        factory.noisy = False
    result: list = []
    endpoints.serverFromString(reactor, endpoint_string(lc)).listen(factory).addBoth(result.append)
    if not result:
        raise RuntimeError(f"listening on {endpoint_string(lc)} did not complete at once")
    if isinstance(result[0], Failure):
        result[0].raiseException()
    return result[0]


def describe(port: IListeningPort) -> str:
    """host:port, or the unix socket's path, for the log."""
    addr = port.getHost()
    if hasattr(addr, "port"):
        return f"{addr.host}:{addr.port}"
    return f"unix:{getattr(addr, 'name', '?')!s}"
