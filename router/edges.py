"""What the edges — one connection's WAMP protocol, the listeners' transports, plain HTTP — need from
the node that runs them, as small typing Protocols (the Nexus way: its transports hold a `Router`
interface, not the server). `router.node.Node` satisfies all of them, and the type checker holds it to
that (the check at the end of router/node.py); anything else that does — a test's stand-in included —
can run a WampProtocol or answer /health without a whole node. The edges import this, never
router.node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from router.metrics import MetricsSource

if TYPE_CHECKING:
    from realms.registry import RealmRegistry
    from router.auth.cookie import CookieStore
    from router.auth.throttle import AuthThrottle
    from router.config import NodeConfig
    from router.metrics import Stats
    from router.routing import RealmRouter
    from router.tuplespace import SessionTable


class Router(Protocol):
    """What one connection's WampProtocol reads: where realms and sessions are, who is throttled or
    remembered by cookie, what to count, and the running realm a session joins."""

    @property
    def realms(self) -> RealmRegistry: ...

    @property
    def table(self) -> SessionTable: ...

    @property
    def throttle(self) -> AuthThrottle: ...

    @property
    def cookies(self) -> CookieStore: ...

    @property
    def stats(self) -> Stats: ...

    @property
    def config(self) -> NodeConfig: ...

    @property
    def goodbye_timeout(self) -> float: ...

    def realm_router(self, uri: str) -> RealmRouter | None: ...


class Listeners(Router, Protocol):
    """What a listener's factory needs: a Router for each connection it makes, the count of open
    connections (the pending-connection cap), and whether WebSocket upgrades set a cookie."""

    def connection_opened(self, peer: str) -> bool: ...

    def connection_closed(self) -> None: ...

    def tracks_cookies(self) -> bool: ...


class HttpNode(MetricsSource, Protocol):
    """What plain HTTP on a WebSocket port needs: the status data (router.metrics), the config's
    `http` section, whether the node is stopping or cut off from its Redis, and the /metrics text."""

    @property
    def config(self) -> NodeConfig: ...

    def redis_reachable(self) -> bool | None: ...

    def metrics(self) -> bytes: ...

    def nodes(self) -> Any: ...  # Deferred[list[dict]]: the live nodes' announcements (the status page)

    def ask_node(self, node_id: str, kind: str, body: Any, timeout: float) -> Any: ...  # Deferred; None: no cluster
