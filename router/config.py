"""The node configuration: one YAML file, validated at start. Every error names the key path.

Every key has a default, so an empty file (or none) gives the embedded default node: a WebSocket
listener on 127.0.0.1:8080/ws and realm `realm1` open to anonymous clients, sessions in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from realms.authorization import ACTIONS, Permission, Role
from realms.realm import AuthConfig, Realm
from realms.schema import (
    ConfigError,
    bool_value,
    int_value,
    known_keys,
    mapping,
    num_value,
    parse_realm,
    parse_user,
    str_value,
)
from router.cluster.url import RedisTarget, parse_redis_url
from router.serializers import SERIALIZERS
from router.transport.forwarded import networks


@dataclass
class ListenerConfig:
    type: str = "websocket"
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/ws"
    serializers: list[str] = field(default_factory=lambda: ["json", "msgpack", "cbor"])
    max_message_size: int = 1024 * 1024
    max_depth: int = 64  # nesting of arrays and maps in one incoming message
    max_outgoing_buffer: int = 4 * 1024 * 1024
    slow_consumer: str = "drop"  # past max_outgoing_buffer: refuse bulk messages, or disconnect
    slow_consumer_timeout: float = 30.0  # seconds past max_outgoing_buffer before a peer is disconnected
    hello_timeout: float = 10.0
    auto_ping_interval: float = 0.0
    auto_ping_timeout: float = 0.0
    trusted_proxies: list[str] = field(default_factory=list)  # whose X-Forwarded-For counts (WebSocket)


def _open_realm(uri: str) -> Realm:
    """The embedded default realm: anonymous clients with every permission."""
    everything = Permission(uri="", match="prefix", allow=frozenset(ACTIONS))
    return Realm(uri, roles={"anonymous": Role("anonymous", (everything,))})


def _admin_realm(uri: str, users: dict) -> Realm:
    """The admin realm: ticket or cryptosign users with the admin role, never anonymous."""
    everything = Permission(uri="", match="prefix", allow=frozenset(ACTIONS))
    return Realm(uri, auth=AuthConfig(anonymous=False, ticket=True, cryptosign=True), users=users,
                 roles={"admin": Role("admin", (everything,))}, join_roles=frozenset({"admin"}),
                 definition={"uri": uri, "auth": {"anonymous": False, "ticket": True, "cryptosign": True}})


@dataclass
class ClusterConfig:
    """`cluster:`: several nodes on one Redis share their session table and membership (README, Cluster)."""

    redis: RedisTarget
    node_id: str
    heartbeat: float = 1.0  # seconds between renewals of the node's key
    node_timeout: float = 3.0  # the key expires this long after the last renewal: the node is dead
    activity_interval: float = 5.0  # at most one last-activity write per session in this many seconds


@dataclass
class NodeConfig:
    name: str = "courtyard"
    listeners: list[ListenerConfig] = field(default_factory=lambda: [ListenerConfig()])
    storage: dict = field(default_factory=lambda: {"backend": "memory"})
    max_sessions: int | None = 100_000
    admin_reserve: int = 10  # sessions the admin realm may open beyond max_sessions
    max_pending_connections: int = 5_000  # connections without a session, on all listeners
    max_retained_bytes: int = 16 * 1024 * 1024  # retained events per realm (event_retention)
    max_pending_calls: int | None = 1_000
    max_uri_length: int = 4096  # characters of any URI a client sends (wamp.DEFAULT_MAX_URI_LENGTH)
    max_subscriptions_per_session: int = 10_000
    max_registrations_per_session: int = 10_000
    sequential_request_ids: bool = False  # enforce the spec's 1, 2, 3, … request ids from clients
    shutdown_grace: float = 5.0
    sweep_interval: float = 1.0
    realms: list[Realm] = field(default_factory=lambda: [_open_realm("realm1")])
    admin_realm: Realm = field(default_factory=lambda: _admin_realm("courtyard.admin", {}))
    data_dir: str | None = ".data"  # where admin changes are kept; None: in memory only
    cluster: ClusterConfig | None = None  # None: one node, nothing of Redis loaded


def _timer(d: dict, key: str, path: str, default: float) -> float:
    """Autobahn's WebSocket timers are quantized to whole seconds, so a value must be 0 (off) or >= 1."""
    v = num_value(d, key, path, default)
    if 0 < v < 1:
        raise ConfigError(f"{path}.{key}", f"must be 0 (off) or at least 1 second, got {v!r}")
    return v


def _hello_timeout(d: dict, path: str, default: float) -> float:
    """Never off: it is what closes connections that have no session (new, authenticating, after GOODBYE)."""
    v = _timer(d, "hello_timeout", path, default)
    if not v:
        raise ConfigError(f"{path}.hello_timeout", "must be at least 1 second (it cannot be off)")
    return v


def _required(value: Any, path: str) -> Any:
    """A limit that has no 'unlimited' (null) setting."""
    if value is None:
        raise ConfigError(path, "must be given, not null")
    return value


def _listener(raw: Any, path: str) -> ListenerConfig:
    d = mapping(raw, path)
    default = ListenerConfig()
    known_keys(d, path, set(default.__dataclass_fields__))
    sers = d.get("serializers", default.serializers)
    if not isinstance(sers, list) or not sers or any(type(s) is not str or s not in SERIALIZERS for s in sers):
        raise ConfigError(f"{path}.serializers", f"must be a non-empty list from {sorted(SERIALIZERS)}, got {sers!r}")
    url_path = str_value(d, "path", path, default.path)
    if not url_path.startswith("/"):
        raise ConfigError(f"{path}.path", f"must start with '/', got {url_path!r}")
    kind = str_value(d, "type", path, default.type, ("websocket", "rawsocket"))
    return ListenerConfig(
        type=kind,
        host=str_value(d, "host", path, default.host),
        port=int_value(d, "port", path, default.port, 0, 65535),
        path=url_path,
        serializers=list(sers),
        max_message_size=int_value(d, "max_message_size", path, default.max_message_size, 64),
        max_depth=int_value(d, "max_depth", path, default.max_depth, 2, 1000),
        max_outgoing_buffer=int_value(d, "max_outgoing_buffer", path, default.max_outgoing_buffer, 1024),
        slow_consumer=str_value(d, "slow_consumer", path, default.slow_consumer, ("drop", "disconnect")),
        slow_consumer_timeout=num_value(d, "slow_consumer_timeout", path, default.slow_consumer_timeout, 0.1),
        hello_timeout=_hello_timeout(d, path, default.hello_timeout),
        auto_ping_interval=_timer(d, "auto_ping_interval", path, default.auto_ping_interval),
        auto_ping_timeout=_timer(d, "auto_ping_timeout", path, default.auto_ping_timeout),
        trusted_proxies=_trusted_proxies(d.get("trusted_proxies", []), f"{path}.trusted_proxies", kind),
    )


def _trusted_proxies(raw: Any, path: str, kind: str) -> list[str]:
    if not isinstance(raw, list) or len(raw) > 1024 or any(type(x) is not str for x in raw):
        raise ConfigError(path, f"must be a list of IP addresses or networks (at most 1024), got {raw!r}")
    if raw and kind != "websocket":
        raise ConfigError(path, "applies to websocket listeners only (RawSocket has no X-Forwarded-For)")
    for i, entry in enumerate(raw):
        try:
            networks([entry])
        except ValueError:
            raise ConfigError(f"{path}[{i}]",
                              f"must be an IP address or network such as 10.0.0.0/8, got {entry!r}") from None
    return list(raw)


def _node_id() -> str:
    """A default node id: the host's name and a random suffix, so two nodes on one host differ."""
    import secrets
    import socket

    return f"{socket.gethostname()[:40]}-{secrets.token_hex(3)}"


def _cluster(raw: Any) -> ClusterConfig | None:
    if raw is None:
        return None
    d = mapping(raw, "cluster")
    known_keys(d, "cluster", {"redis", "password", "node_id", "heartbeat", "node_timeout", "activity_interval"})
    url = str_value(d, "redis", "cluster", "redis://127.0.0.1:6379/0")
    password = d.get("password")
    if password is not None and not isinstance(password, str):
        raise ConfigError("cluster.password", "must be a string")
    try:
        target = parse_redis_url(url, password)
    except ValueError as e:
        shown = repr(url) if "@" not in url else "a URL with a password (not shown)"
        raise ConfigError("cluster.redis", f"{e}, got {shown}") from None
    node_id = d.get("node_id")
    if node_id is None:
        node_id = _node_id()
    elif (not isinstance(node_id, str) or not 0 < len(node_id) <= 64
          or not all(c.isalnum() or c in "-_." for c in node_id)):
        raise ConfigError("cluster.node_id", f"must be 1-64 letters, digits, '-', '_' or '.', got {node_id!r}")
    heartbeat = _required(num_value(d, "heartbeat", "cluster", 1.0, 0.05), "cluster.heartbeat")
    node_timeout = _required(num_value(d, "node_timeout", "cluster", 3.0, 0.1), "cluster.node_timeout")
    if node_timeout < 2 * heartbeat:
        raise ConfigError("cluster.node_timeout", f"must be at least twice cluster.heartbeat ({heartbeat:g}), "
                          f"got {node_timeout:g}: one late heartbeat must not declare a node dead")
    activity = _required(num_value(d, "activity_interval", "cluster", 5.0, 0.01), "cluster.activity_interval")
    return ClusterConfig(target, node_id, heartbeat, node_timeout, activity)


def parse(raw: Any) -> NodeConfig:
    """Validate a decoded YAML document into a NodeConfig; raises ConfigError naming the key path."""
    d = mapping(raw, "(top level)")
    known_keys(d, "", {"node", "listeners", "storage", "limits", "shutdown", "realms", "admin", "cluster"})
    default = NodeConfig()
    node = mapping(d.get("node"), "node")
    known_keys(node, "node", {"name", "sweep_interval"})
    listeners_raw = d.get("listeners", [{}])
    if not isinstance(listeners_raw, list) or not listeners_raw:
        raise ConfigError("listeners", "must be a non-empty list")
    listeners = [_listener(x, f"listeners[{i}]") for i, x in enumerate(listeners_raw)]
    storage = mapping(d.get("storage"), "storage")
    known_keys(storage, "storage", {"backend"})
    cluster = _cluster(d.get("cluster"))
    backend = str_value(storage, "backend", "storage", "memory" if cluster is None else "redis", ("memory", "redis"))
    if (backend == "redis") != (cluster is not None):
        raise ConfigError("storage.backend", "redis needs a cluster: section, and a cluster shares its session "
                          f"table in Redis (backend redis), got {backend!r}")
    limits = mapping(d.get("limits"), "limits")
    known_keys(limits, "limits", {"max_sessions", "admin_reserve", "max_pending_connections",
                                       "max_pending_calls", "max_retained_bytes", "sequential_request_ids",
                                       "max_uri_length", "max_subscriptions_per_session",
                                       "max_registrations_per_session"})
    shutdown = mapping(d.get("shutdown"), "shutdown")
    known_keys(shutdown, "shutdown", {"grace_period"})
    realms_raw = d.get("realms")
    if realms_raw is None:
        realms = [_open_realm("realm1")]
    elif isinstance(realms_raw, list):
        realms = [parse_realm(x, f"realms[{i}]") for i, x in enumerate(realms_raw)]
    else:
        raise ConfigError("realms", "must be a list")
    admin = mapping(d.get("admin"), "admin")
    known_keys(admin, "admin", {"realm", "data_dir", "users"})
    admin_uri = str_value(admin, "realm", "admin", "courtyard.admin")
    admin_users = {}
    for authid, user in mapping(admin.get("users"), "admin.users").items():
        upath = f"admin.users.{authid}"
        admin_users[str(authid)] = parse_user(str(authid), {"role": "admin", **mapping(user, upath)}, upath)
    data_dir = admin.get("data_dir", ".data")
    if data_dir is not None and not (isinstance(data_dir, str) and data_dir):
        raise ConfigError("admin.data_dir", f"must be a directory path or null, got {data_dir!r}")
    seen: set[str] = {admin_uri}
    for i, r in enumerate(realms):
        if r.uri in seen:
            raise ConfigError(f"realms[{i}].uri", f"realm {r.uri!r} is defined twice")
        seen.add(r.uri)
    return NodeConfig(
        name=str_value(node, "name", "node", default.name),
        listeners=listeners,
        storage={"backend": backend},
        max_sessions=int_value(limits, "max_sessions", "limits", default.max_sessions, 1),
        admin_reserve=_required(int_value(limits, "admin_reserve", "limits", default.admin_reserve),
                                "limits.admin_reserve"),
        max_pending_connections=_required(int_value(limits, "max_pending_connections", "limits",
                                                    default.max_pending_connections, 1),
                                          "limits.max_pending_connections"),
        max_pending_calls=int_value(limits, "max_pending_calls", "limits", default.max_pending_calls, 1),
        max_retained_bytes=_required(int_value(limits, "max_retained_bytes", "limits", default.max_retained_bytes),
                                     "limits.max_retained_bytes"),
        max_uri_length=_required(int_value(limits, "max_uri_length", "limits", default.max_uri_length, 64,
                                           1024 * 1024), "limits.max_uri_length"),
        max_subscriptions_per_session=_required(int_value(limits, "max_subscriptions_per_session", "limits",
                                                          default.max_subscriptions_per_session, 1),
                                                "limits.max_subscriptions_per_session"),
        max_registrations_per_session=_required(int_value(limits, "max_registrations_per_session", "limits",
                                                          default.max_registrations_per_session, 1),
                                                "limits.max_registrations_per_session"),
        sequential_request_ids=bool_value(limits, "sequential_request_ids", "limits", default.sequential_request_ids),
        shutdown_grace=num_value(shutdown, "grace_period", "shutdown", default.shutdown_grace),
        sweep_interval=num_value(node, "sweep_interval", "node", default.sweep_interval, 0.01),
        realms=realms,
        admin_realm=_admin_realm(admin_uri, admin_users),
        data_dir=data_dir,
        cluster=cluster,
    )


def load(path: str | Path | None) -> NodeConfig:
    """Read and validate a config file; None gives the embedded default."""
    if path is None:
        return parse({})
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror}")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), f"invalid YAML: {e}")
    return parse(raw)
