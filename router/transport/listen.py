"""Open a listener through a Twisted server endpoint (`tcp:` from host and port, or the listener's
`endpoint`: `unix:`, `systemd:`), TLS wrapped around its factory when the listener has `tls`, exactly
as `SSL4ServerEndpoint` does it. A worker (`--workers N`) listens on a TCP port shared by SO_REUSEPORT."""

from __future__ import annotations

import socket

from twisted.internet import endpoints, reactor, tcp
from twisted.internet.interfaces import IListeningPort, IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from router.config import ListenerConfig


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableCredentials:
    """What a listener's TLS layer asks for each new connection: the current CertificateOptions, which
    a reload (SIGHUP) swaps for ones read from the renewed files. Connections already open keep theirs."""

    def __init__(self, options: object) -> None:
        self.options = options

    def serverConnectionForTLS(self, protocol: object) -> object:
        return self.options.serverConnectionForTLS(protocol)


def endpoint_string(lc: ListenerConfig) -> str:
    """The listener's endpoint description; the host is quoted (an IPv6 address has colons)."""
    if lc.endpoint is not None:
        return lc.endpoint
    return f"tcp:port={lc.port}:interface={endpoints.quoteStringArgument(lc.host)}"


class SharedPort(tcp.Port):
    """A TCP port whose socket has SO_REUSEPORT set before bind, so that every worker binds the same
    host and port and the kernel spreads incoming connections over them (Linux: by a hash of the
    connection's addresses). Chosen over binding once in the supervisor and handing the socket to
    each worker (`adoptStreamPort`): each worker binds and listens on its own, so a worker restarted
    after a crash simply binds again, the supervisor holds no socket (it never accepts, so it could
    never stall a queue of connections), and a worker that dies takes only its own accept queue with it.
    Only processes of the same user can join a port group; a port held without SO_REUSEPORT (another
    program) fails to bind, as it does for a single node."""

    def createInternetSocket(self) -> socket.socket:
        s = super().createInternetSocket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return s


def listen(lc: ListenerConfig, factory: Factory, shared: bool = False) -> IListeningPort:
    """Listen now (tcp, unix and systemd endpoints answer at once); an address in use raises as
    listenTCP would. `shared`: a worker's port, bound with SO_REUSEPORT (host and port listeners only:
    the config refuses `endpoint` with workers)."""
    if lc.tls is not None:  # its credentials: what a reload swaps (router/reload.py)
        lc.tls.live = ReloadableCredentials(lc.tls.options)
        factory = TLSMemoryBIOFactory(lc.tls.live, False, factory)
        factory.noisy = False
    if shared:
        if lc.endpoint is not None:
            raise ValueError(f"a shared port needs host and port, not the endpoint {lc.endpoint!r}")
        port = SharedPort(lc.port, factory, interface=lc.host, reactor=reactor)
        port.startListening()
        return port
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
