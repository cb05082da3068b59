"""A running Courtyard node, built from a NodeConfig: realms, session table, listeners, sweeps and
graceful shutdown. Twisted's service model: `start()` listens, `stop()` says GOODBYE and closes."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from realms.admin import REALM_DELETED, USER_REMOVED, AdminAPI
from realms.registry import RealmRegistry
from realms.store import RealmStore, store_path
from router import storage, wamp
from router.auth.cookie import CookieStore
from router.auth.throttle import AuthThrottle
from router.config import NodeConfig
from router.metrics import Stats
from router.processes import Processes
from router.protocol import CLOSED
from router.routing import RealmRouter
from router.serializers import JsonSerializer
from router.service import ServiceSession
from router.session import Session
from router.transport.admission import Admission
from router.transport.listen import describe, listen
from router.transport.rawsocket import WampRawSocketFactory
from router.transport.websocket import WampWebSocketFactory
from router.tuplespace import SessionTable

PROCESS = "process"  # a bus request: an admin process procedure for a session of the node asked


class _Gone:
    """The transport of a session whose node died: nothing can reach it any more."""

    codec = None

    def send(self, msg: list, bulk: bool = False) -> None:
        return None

    def send_prepared(self, frame: Any) -> None:
        return None

    def close(self, reason: str = "", message: str | None = None) -> None:
        return None


SHARD_MARK = "cy:shard"  # on each shard: "index/count", as the cluster's running nodes list it


@defer.inlineCallbacks
def _same_shards(redis: Any, shards: list, cluster: Any):
    """Every node must list the same shards in the same order (a node's data channel is where the
    others' hash puts it). Each shard holds its index and the count, written by the first node that
    reaches it; a node joining running nodes that finds another mark is refused at start
    (RedisUnavailable: exit 2). The first node of a cluster writes the marks anew, so a cluster
    stopped and started with another list is not. URLs are not compared: nodes may reach one Redis by
    different names."""
    from router.cluster.connection import RedisUnavailable
    from router.cluster.membership import live_nodes

    first = not [n for n in (yield live_nodes(redis)) if n.get("id") != cluster.node_id]
    count = len(cluster.shards)
    for i, conn in enumerate([redis, *shards]):
        mark = f"{i}/{count}"
        yield conn.set(SHARD_MARK, mark, only_if_not_exists=not first)
        found = yield conn.get(SHARD_MARK)
        if found != mark:
            raise RedisUnavailable(f"cluster.redis: {cluster.shards[i].display()} is not shard {i} of {count} of "
                                   f"the running nodes' cluster (it is shard {found}): every node must list the "
                                   "same shards in the same order")


class Node:
    log = Logger()
    goodbye_timeout = 5.0  # how long a GOODBYE from the router waits for its answer
    shared_ports = False  # a worker (`--workers N`): listen with SO_REUSEPORT (router/workers.py)

    def __init__(self, config: NodeConfig, redis: Any = None, shards: tuple = ()) -> None:
        """`redis`: a cluster node's connection to its home shard, `shards` those to the others
        (`Node.connect` makes them first): the node's parts are chosen here, once, the cluster's or the
        local ones, never swapped afterwards."""
        self.config = config
        wamp.set_max_uri_length(config.max_uri_length)
        self.realms = RealmRegistry([*config.realms, config.admin_realm])
        self.store: Any = None
        if config.cluster is None:
            self.store = RealmStore(store_path(config.data_dir))  # StoreError: refused, by file name
            self.store.apply(self.realms)  # admin changes from earlier runs, over the YAML base
        else:  # the cluster's store, in Redis (join_cluster), over copies of the YAML's realms
            self._base = {r.uri: dataclasses.replace(r, users=dict(r.users)) for r in self.realms.list()}
        self.storage = storage.create(config.storage, config.cluster)
        self.table = SessionTable(self.storage, config.max_sessions,
                                  {config.admin_realm.uri: config.admin_reserve})
        self._routers: dict[str, RealmRouter] = {}
        self._services: dict[str, ServiceSession] = {}  # realm → the in-router session its processes use
        self.processes = Processes(self.table, self._process_config, self._process_service)
        self.throttle: Any = AuthThrottle()  # in a cluster: ClusterThrottle, ClusterCookieStore (below)
        self.cookies: Any = CookieStore()
        self.ports: list[IListeningPort] = []
        self._sweeper = task.LoopingCall(self.sweep)
        self.connections = 0  # open client connections on all listeners, with a session or not
        self._refused = 0  # connections refused since the last one admitted
        self.started = None
        self.stopping = False  # set by stop(): /health answers 503
        self.redis = None  # a cluster's Redis connection (join_cluster)
        self.bus = None
        self.membership = None
        self.probe = None  # the bus round trip and live nodes, for /metrics (router/cluster/probe.py)
        self.cluster_parts: list = []  # cross-node routing state (router/cluster/part.py), in a cluster
        self.admin_users: Any = None  # the cluster-wide admin users (router/cluster/adminusers.py), in a cluster
        self.stats = Stats()  # what /metrics and the status page show (router.metrics)
        self.admission = Admission(config, self.stats)  # limits against reconnect storms
        self._registry = None  # the Prometheus registry, made on the first scrape
        self.shards = shards  # connections to the bus's other shards (docs/cluster.md, Shards)
        if redis is not None:
            self._build_cluster(redis)

    @classmethod
    @defer.inlineCallbacks
    def connect(cls, config: NodeConfig):
        """Deferred[Node]: for a cluster node, Redis first (RedisUnavailable: it cannot be reached), then
        the node built with its cluster parts; then `join_cluster` starts them. One node: built at once."""
        redis, shards = None, []
        if config.cluster is not None:
            from router.cluster.connection import connect

            timeout = max(1.0, config.cluster.node_timeout)
            redis = yield connect(config.cluster.redis, timeout=timeout)
            try:
                for target in config.cluster.shards[1:]:
                    shards.append((yield connect(target, timeout=timeout)))
                yield _same_shards(redis, shards, config.cluster)
            except Exception:
                for conn in [redis, *shards]:
                    conn.disconnect()
                raise
        return cls(config, redis, tuple(shards))

    def realm_router(self, uri: str) -> RealmRouter | None:
        """The running realm for a realm definition, created on first use; None once it is deleted."""
        router = self._routers.get(uri)
        if router is None:
            spec = self.realms.get(uri)
            if spec is None:
                return None
            c = self.config
            router = self._routers[uri] = RealmRouter(spec, c.max_pending_calls, self.table, c.max_retained_bytes,
                                                      c.max_subscriptions_per_session,
                                                      c.max_registrations_per_session)
            if uri != c.admin_realm.uri:  # there courtyard.process.* are the admin procedures
                self.processes.install(router)
            for part in self.cluster_parts:
                part.realm_started(router)
        return router

    def _process_config(self, uri: str):
        spec = self.realms.get(uri)
        return spec.session_process if spec is not None else None

    def _process_service(self, uri: str) -> ServiceSession | None:
        """The in-router session through which the realm's session processes publish and call."""
        service = self._services.get(uri)
        if service is None:
            router = self.realm_router(uri)
            if router is None:
                return None
            service = self._services[uri] = ServiceSession(router, authid="courtyard.process")
        return service

    def drop_realm(self, uri: str) -> None:
        """A deleted realm's running state (retained events, subscriptions, registrations) goes with
        it, so a realm created again under its URI starts empty. Its sessions are closed before."""
        self._services.pop(uri, None)
        router = self._routers.pop(uri, None)
        if router is not None:  # the node's count of EVENTs sent stays whole
            self.stats.msgs_out[wamp.EVENT] += router.events_delivered

    def realm_routers(self) -> dict[str, RealmRouter]:
        """The running realms, by URI (a copy)."""
        return dict(self._routers)

    def metrics(self) -> bytes:
        """/metrics: the Prometheus text exposition of the node's counters and its process."""
        from router import prometheus  # on the first scrape: see router/prometheus.py

        if self._registry is None:
            self._registry = prometheus.registry(self)
        return prometheus.render(self._registry)

    def connection_opened(self, peer: str) -> bool:
        """Count a new connection, or refuse it (False: close it at once) while max_pending_connections
        connections have no session: in the opening handshake, before HELLO, authenticating or after
        GOODBYE. One log line when refusing starts and one when it ends, not one per connection."""
        if self.connections - self.table.size() >= self.config.max_pending_connections:
            if not self._refused:
                self.log.warn("refusing connections (the first from {peer}): {n} connections have no session "
                              "(limits.max_pending_connections)", peer=peer, n=self.connections - self.table.size())
            self._refused += 1
            return False
        if self._refused:
            self.log.info("accepting connections again; {n} refused", n=self._refused)
            self._refused = 0
        self.connections += 1
        return True

    def connection_closed(self) -> None:
        self.connections -= 1

    # -- lifetime --------------------------------------------------------------------------------
    def _build_cluster(self, redis: Any) -> None:
        """The cluster's parts, chosen at construction: Redis's session mirror, the bus, the cluster-wide
        throttle, cookies and realm store, and the routing state across nodes. Imports the Redis client
        only for a cluster node."""
        from router import http
        from router.cluster.adminusers import CHANGED, ClusterAdminUsers
        from router.cluster.bus import KILL, Bus
        from router.cluster.cookies import ClusterCookieStore
        from router.cluster.gather import Gather
        from router.cluster.pubsub import ClusterPubSub
        from router.cluster.purge import LEFT, NODE_DOWN
        from router.cluster.realmstore import REALM_CHANGED, RESTORED, ClusterRealmStore
        from router.cluster.rpc import ClusterRPC
        from router.cluster.throttle import ClusterThrottle

        cluster = self.config.cluster
        self.redis = redis
        self.storage.attach(redis)
        self.bus = Bus(redis, cluster.redis, cluster.node_id, max(1.0, cluster.node_timeout),
                       list(zip(self.shards, cluster.shards[1:], strict=True)))
        self.stats.cluster = self.bus.stats
        self.storage.listen(Gather(self.bus, redis, cluster.node_id))  # session meta asks every node
        self.bus.on(LEFT, self._sessions_left)
        self.bus.on(KILL, self._kill_here)
        self.bus.on(http.STATUS, lambda sender, body: http.node_status(self, body))  # the status page's
        self.bus.on(PROCESS, lambda sender, body: self.admin.process_here(
            body["name"], body["session"], *body["args"][:2]))
        self.table.remote_kill = lambda node, ids, realm, reason, message: self.bus.send(
            node, KILL, {"realm": realm, "sessions": ids, "reason": reason, "message": message})
        self.throttle = ClusterThrottle(redis)  # before any connection: no failure counted yet
        self.cookies = ClusterCookieStore(redis)
        self.store = ClusterRealmStore(redis, self.bus, self._base, self._install_realm)
        self.bus.on(REALM_CHANGED, lambda sender, body: self.store.refresh(body.get("realm"), body.get("version")))
        self.bus.on(RESTORED, lambda sender, body: sender != cluster.node_id and self.store.reload())
        self.bus.on(NODE_DOWN, lambda sender, node_id: self._node_down(node_id))
        self.bus.resubscribed = self._bus_back
        self.admin_users = ClusterAdminUsers(redis, self.bus, cluster.node_id, self.config.admin_realm.users,
                                             self._install_admin_users)
        self.bus.on(CHANGED, lambda sender, body: sender != cluster.node_id and self.admin_users.refresh())
        self.cluster_parts = [
            ClusterPubSub(redis, self.bus, cluster.node_id, self._routers.get, self.realm_routers),
            ClusterRPC(redis, self.bus, cluster.node_id, self.table, cluster.node_timeout),
            self.admin_users,
        ]

    @defer.inlineCallbacks
    def join_cluster(self):
        """Before `start` in a cluster: the bus listens, the routing state and the realm store are read."""
        if self.bus is None:
            raise RuntimeError("a cluster node is built with its Redis connection: Node.connect(config)")
        yield self.bus.start()
        for part in self.cluster_parts:
            yield part.start()
        yield self.store.load()  # after subscribing: a change made meanwhile is read twice, not missed

    def _install_realm(self, uri: str, realm: Any) -> None:
        """The cluster's realm store says realm `uri` is now `realm` (None: deleted). Sessions here of
        a deleted realm or a removed user are closed, as on the node where the admin made the change."""
        current = self.realms.get(uri)
        if realm is None:
            if current is None or uri == self.config.admin_realm.uri:
                return
            sessions = self.table.list(uri)
            for s in sessions:
                self.table.kill(s.id, REALM_DELETED, "the realm was deleted")
            self.realms.remove(uri)
            self.drop_realm(uri)
            self.log.info("realm {uri} deleted in the cluster: {n} session(s) here closed", uri=uri, n=len(sessions))
            return
        if current is not None:
            gone = current.users.keys() - realm.users.keys()
            for s in self.table.list(uri) if gone else ():
                if s.authid in gone:
                    self.table.kill(s.id, USER_REMOVED, "the user was removed")
            self.realms.remove(uri)
        self.realms.add(realm)

    def _install_admin_users(self, users: dict) -> None:
        """The cluster-wide admin users (router/cluster/adminusers.py) are the admin realm's YAML base;
        the realm store's admin changes are laid over them again."""
        uri = self.config.admin_realm.uri
        self._base[uri] = dataclasses.replace(self._base[uri], users=dict(users))
        self.store.reinstall(uri)

    def _node_down(self, node_id: str) -> None:
        """Another node is gone (dead or stopped): every part forgets what it had of it."""
        if node_id == self.config.cluster.node_id:
            return  # taken for dead while alive: membership re-announces this node (resync)
        for part in self.cluster_parts:
            try:
                part.node_down(node_id)
            except Exception:  # a bug, but one part's: the others still forget the node
                self.log.failure("forgetting node {node} failed", node=node_id)

    def _bus_back(self) -> None:
        """Listening to the bus again: broadcasts sent meanwhile were lost, so every part re-reads the
        cluster (and re-writes its own routing state, idempotently). The session records and the node's
        key are membership's to re-write, on its next heartbeat."""
        for part in self.cluster_parts:
            part.resync()
        self.store.reload()

    def _resync(self) -> None:
        """Redis is back, or this node was taken for dead: write everything of this node again."""
        self.storage.resync()
        self._bus_back()  # and the broadcasts sent meanwhile were lost: every part re-reads the cluster

    def _fenced(self) -> None:
        """The cluster purged this node (it stalled or was cut off past node_timeout) and published its
        sessions' testaments and on_leave: those sessions are closed with GOODBYE
        courtyard.close.node_fenced, without publishing either again, so that their clients reconnect
        into a cluster that agrees with them. A session opened after this node may have been taken for
        dead was never reported as left: it is closed as usual. Then membership joins again."""
        from router.cluster.membership import FENCED

        self.bus.release(drop=True)  # what the bus held was for the sessions closed here
        since = time.time() - self.membership.stale_for()
        sessions = self.table.list()
        for s in sessions:
            try:
                if s.created <= since and s.realm is not None:
                    s.realm.meta.reported_left(s.id)
                s.transport.close(FENCED, "this node was cut off from the cluster, which reported this "
                                          "session as left; join again")
            except Exception:  # a bug, but one session's: every other is still closed
                self.log.failure("closing session {sid} of a purged node failed", sid=s.id)
        self.log.warn("fenced: closed {n} session(s) the cluster had reported as left", n=len(sessions))

    def _kill_here(self, sender: str, body: dict) -> None:
        """Another node's meta or admin API killed sessions of this node: GOODBYE with its reason."""
        for sid in body["sessions"][:100_000]:
            session = self.table.lookup(sid)
            if session is not None and session.realm_uri == body["realm"]:
                self.log.info("session {sid} killed from node {node} ({reason})", sid=sid, node=sender,
                              reason=wamp.quote(body["reason"]))
                session.transport.close(body["reason"], body.get("message"))

    def _sessions_left(self, sender: str, leavers: list) -> None:
        """A dead node's sessions were purged by this node: their testaments and
        wamp.session.on_leave, published here and, like any publication, to the other nodes'
        subscribers."""
        if sender != self.config.cluster.node_id:
            return
        for realm, sid, authid, authrole, testaments in leavers[:100_000]:
            router = self.realm_router(realm)
            if router is None:
                continue
            if testaments:  # the dead session's last words, published here as if it had sent them
                stand_in = Session(sid, realm, _Gone(), None, None, {}, authid, authrole, "", "", realm=router)
                role = router.spec.role(authrole)  # its role's disclosure rules, as on its own node
                stand_in.authorizer = None if role is None or role.allows_everything() else role
                router.meta.publish_testaments(stand_in, JsonSerializer().decode(testaments.encode()))
            router.meta.publish("wamp.session.on_leave", [sid, authid, authrole])

    def _announce(self) -> None:
        """In a cluster, after the listeners are up: the node's key and heartbeat (membership)."""
        from router.cluster.membership import Membership
        from router.cluster.purge import LEFT, Purger

        cluster = self.config.cluster
        purger = Purger(self.redis, cluster.node_id, claim_ttl=max(10.0, 3 * cluster.node_timeout),
                        announce=lambda leavers: self.bus.broadcast(LEFT, leavers),
                        gone=self._purged, dead=self._node_down)
        lc, port = self.config.listeners[0], self.ports[0].getHost()
        address = (f"ws://{port.host}:{port.port}{lc.path}" if lc.type == "websocket"
                   else f"rawsocket://{port.host}:{port.port}")
        self.membership = Membership(self.redis, cluster.node_id, address, cluster.heartbeat, cluster.node_timeout,
                                     self.table.size, cluster.redis.display(), self._resync, purger,
                                     on_fenced=self._fenced, on_member=self.bus.release,
                                     shards=tuple(t.display() for t in cluster.shards))
        self.bus.stale = self.membership.stale
        announced = self.membership.start()
        announced.addCallback(lambda _: self.admin_users.publish())  # a member now: the others read its entry
        announced.addErrback(lambda f: self.log.warn("announcing the node failed: {e}", e=f.getErrorMessage()))
        from router.cluster.probe import BusProbe

        self.probe = BusProbe(self.bus, self.membership, cluster.heartbeat)
        self.probe.start()

    def _purged(self, node_id: str):
        """This node purged a dead one: counted (/metrics), and every node told it is gone."""
        from router.cluster.purge import NODE_DOWN

        self.stats.cluster.purges += 1
        return self.bus.broadcast(NODE_DOWN, node_id)

    def nodes(self):
        """Deferred[list[dict]]: the cluster's live nodes; on one node, this one."""
        if self.membership is not None:
            return self.membership.list_nodes()
        return defer.succeed([{"id": self.config.name, "address": None, "sessions": self.table.size(),
                               "started": None, "heartbeat": None}])

    def start(self) -> list[IListeningPort]:
        t0 = time.perf_counter()
        for lc in self.config.listeners:
            if lc.type == "rawsocket":
                factory, scheme, path = WampRawSocketFactory(self, lc), ("tls" if lc.tls else "tcp"), ""
                kind = "RawSocket"
            else:
                factory, scheme, path = WampWebSocketFactory(self, lc), ("wss" if lc.tls else "ws"), lc.path
                kind = "WebSocket"
            port = listen(lc, factory, self.shared_ports)
            self.ports.append(port)
            self.log.info("listening for WAMP over {kind} on {scheme}://{where}{path} ({sers})", kind=kind,
                          scheme=scheme, where=describe(port), path=path, sers=", ".join(lc.serializers))
        self._start_admin_realm()
        if self.redis is not None:
            self._announce()
        self._sweeper.start(self.config.sweep_interval, now=False)
        self.started = time.perf_counter() - t0
        return self.ports

    def _start_admin_realm(self) -> None:
        """The admin realm's procedures, served by an in-router callee."""
        uri = self.config.admin_realm.uri
        self.admin = AdminAPI(self.realms, self.table, self.store, uri, wipe=self.sweep, drop=self.drop_realm,
                              nodes=self.nodes, max_uri_length=self.config.max_uri_length,
                              processes=self.processes,
                              forward=self._forward_process if self.redis is not None else None)
        self.admin_service = ServiceSession(self.realm_router(uri))
        for procedure in self.admin.procedures:
            self.admin_service.register(procedure, lambda details, args, kwargs, p=procedure: self.admin.call(
                p, details.get("caller_authid", "?"), args, kwargs))

    def _forward_process(self, node: str, name: str, session_id: int | None, args: list):
        """An admin process procedure for a session of `node` (its process lives there): Deferred."""
        if node == self.config.cluster.node_id:
            return defer.maybeDeferred(self.admin.process_here, name, session_id, *args)
        wait = max(5.0, 2 * self.config.cluster.node_timeout)
        if name == "call":  # the process's own call_timeout is known there: wait at least that long
            wait += args[1] if len(args) > 1 and args[1] else 60.0
        return self.bus.request(node, PROCESS, {"name": name, "session": session_id, "args": args}, wait)

    def sweep(self) -> int:
        """Close sessions past their lifetime or idle timeout (the seeds' `wipe`). Returns how many."""
        now = time.time()
        closed = 0
        self.cookies.purge()
        for realm in self.realms.list():
            if not realm.has_timeouts():
                continue  # nothing in this realm can expire: no scan of its sessions
            for session in self.table.list(realm.uri):
                try:
                    closed += self._sweep_one(session, realm, now)
                except Exception:  # a bug, but one session's: the sweep (a LoopingCall) must live on
                    self.log.failure("sweeping session {sid} failed", sid=session.id)
        return closed

    @staticmethod
    def _sweep_one(session, realm, now: float) -> int:
        idle_timeout = realm.limits_for(session.authrole).idle_timeout
        if session.expired(now):
            session.transport.close(wamp.SESSION_EXPIRED, "the session's lifetime is over")
            return 1
        if idle_timeout is not None and now - session.last_active >= idle_timeout:
            session.transport.close(wamp.SESSION_IDLE, f"no traffic for {idle_timeout:g}s")
            return 1
        return 0

    def ask_node(self, node_id: str, kind: str, body: Any, timeout: float):
        """A bus request to another node (the status page's): Deferred of its answer; None on one node."""
        return self.bus.request(node_id, kind, body, timeout) if self.bus is not None else None

    def redis_reachable(self) -> bool | None:
        """None on one node; in a cluster, whether its Redis connection is up (/health says so)."""
        if self.config.cluster is None:
            return None
        from router.cluster.connection import connected

        return connected(self.redis)

    def bus_delivery(self) -> tuple[bool, float] | None:
        """Whether this node's own message through the bus came back lately (router/cluster/probe.py),
        and how long ago; None without a probe (one node, or not joined yet)."""
        if self.probe is None:
            return None
        return self.probe.working(), self.probe.age()

    def tracks_cookies(self) -> bool:
        """Cookies are set on WebSocket upgrades only where some realm authenticates by cookie."""
        return any(r.auth.cookie for r in self.realms.list())

    @defer.inlineCallbacks
    def stop(self):
        """Graceful shutdown: stop accepting, GOODBYE every session, wait the grace period for the
        answers, then close what is left."""
        self.stopping = True
        if self._sweeper.running:
            self._sweeper.stop()
        yield defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
        sessions = self.table.list()
        if sessions:
            self.log.info("shutting down: saying GOODBYE to {n} sessions", n=len(sessions))
        transports = [s.transport for s in sessions]
        for t in transports:
            try:
                t.close(wamp.SYSTEM_SHUTDOWN, "the router is shutting down")
            except Exception:  # a bug, but one session's: every other still hears GOODBYE
                self.log.failure("saying GOODBYE to a session failed")
        deadline = time.monotonic() + self.config.shutdown_grace
        while any(t.state != CLOSED for t in transports) and time.monotonic() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
        for t in transports:
            if t.state != CLOSED:
                t.state = CLOSED
                t.wire.close_transport("shutdown grace period over")
        self.processes.terminate_all("node shutdown")
        if self.redis is not None:
            yield self._leave_cluster()
        self.log.info("stopped")

    @defer.inlineCallbacks
    def _leave_cluster(self):
        """Write the closed sessions' deletions, remove the node's key, disconnect: a graceful stop
        leaves nothing of this node in Redis. Bounded: a Redis that does not answer is not waited for."""
        from router.cluster.purge import NODE_DOWN

        try:
            for _ in range(20):
                if not self.storage.backlog():
                    break
                yield self.storage.flush()
            if self.probe is not None:
                self.probe.stop()
            for part in self.cluster_parts:
                yield part.stop()
            if self.membership is not None:
                yield self.membership.stop()
            yield self.bus.broadcast(NODE_DOWN, self.config.cluster.node_id)
        except Exception as e:
            self.log.warn("leaving the cluster cleanly failed: {e}", e=e)
        self.storage.detach()
        if self.bus is not None:
            yield self.bus.stop()
        for conn in (self.redis, *self.shards):
            yield conn.disconnect()
        self.redis = None


if TYPE_CHECKING:
    from router.edges import HttpNode, Listeners
    from router.metrics import MetricsSource

    def _node_is(node: Node) -> tuple[Listeners, HttpNode, MetricsSource]:
        """Node is what the edges' interfaces declare: the type checker fails here when it is not."""
        return node, node, node
