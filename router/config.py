"""The node configuration: one YAML file, validated at start. Every error names the key path.

Every key has a default, so an empty file (or none) gives the embedded default node: a WebSocket
listener on 127.0.0.1:8080/ws and realm `realm1` open to anonymous clients, sessions in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from realms.authorization import ACTIONS, Permission, Role
from realms.checks import check_realm
from realms.realm import AuthConfig, Realm
from realms.schema import (
    ConfigError,
    bool_value,
    collect,
    int_value,
    known_keys,
    mapping,
    num_value,
    parse_realm,
    parse_user,
    raise_any,
    str_value,
)
from router.cluster.limits import MAX_ITEM_BYTES
from router.cluster.url import RedisTarget, parse_redis_url
from router.serializers import SERIALIZERS
from router.transport.forwarded import networks
from router.transport.tls import TlsConfig
from router.transport.tls import parse as parse_tls


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
    tls: TlsConfig | None = None  # wss:// and RawSocket over TLS
    endpoint: str | None = None  # a Twisted server endpoint string (unix:, systemd:) instead of host and port


# The keys and bounds of the node's sections: the parser below and the JSON Schema (router/config_schema.py)
# read these same definitions. A listener's keys are ListenerConfig's fields.
CONFIG_VERSION = 1  # `version:`, the config format; any other value is refused
TOP_KEYS = ("version", "node", "listeners", "storage", "limits", "shutdown", "realms", "admin", "cluster", "http")
NODE_KEYS = ("name", "sweep_interval", "workers", "pid_file")
STORAGE_KEYS = ("backend",)
SHUTDOWN_KEYS = ("grace_period",)
ADMIN_KEYS = ("realm", "data_dir", "users")
CLUSTER_KEYS = ("redis", "password", "sentinel_password", "sentinel_tls", "node_id", "heartbeat", "node_timeout",
                "activity_interval")
HTTP_KEYS = ("health", "metrics", "status", "allow", "token")
HTTP_SWITCHES = ("health", "metrics", "status")
LISTENER_TYPES = ("websocket", "rawsocket")
SLOW_CONSUMER = ("drop", "disconnect")
LISTENER_INTS = {"port": (0, 65535), "max_message_size": (64, None), "max_depth": (2, 1000),  # key: (lo, hi)
                 "max_outgoing_buffer": (1024, None)}
# limits.<key>: (lo, hi, required: no null 'unlimited' setting)
LIMIT_INTS = {"max_sessions": (1, None, False), "admin_reserve": (0, None, True),
              "max_pending_connections": (1, None, True), "max_pending_calls": (1, None, False),
              "max_retained_bytes": (0, None, True), "max_uri_length": (64, 1024 * 1024, True),
              "max_subscriptions_per_session": (1, None, True), "max_registrations_per_session": (1, None, True),
              # admission (router/transport/admission.py): null, the default, is no limit
              "max_connections_per_address": (1, None, False), "connections_per_second_per_address": (1, None, False),
              "connections_per_second": (1, None, False), "max_sessions_per_authid": (1, None, False)}
LIMIT_KEYS = (*LIMIT_INTS, "sequential_request_ids")


MAX_SHARDS = 16  # Redis instances in cluster.redis
DATA_DIR_MARK = "{data_dir}"  # in node.pid_file: admin.data_dir
PID_DEFAULT = DATA_DIR_MARK + "/courtyard.pid"


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
    """`cluster:`: several nodes on one Redis share their session table and membership (docs/cluster.md)."""

    redis: RedisTarget  # the home shard: every key, and the bus's control plane
    node_id: str
    heartbeat: float = 1.0  # seconds between renewals of the node's key
    node_timeout: float = 3.0  # the key expires this long after the last renewal: the node is dead
    activity_interval: float = 5.0  # at most one last-activity write per session in this many seconds
    shards: tuple[RedisTarget, ...] = ()  # every shard, the home shard first (docs/cluster.md, Shards)

    def __post_init__(self) -> None:
        if not self.shards:
            self.shards = (self.redis,)


@dataclass
class HttpConfig:
    """`http:`: the plain HTTP endpoints on WebSocket listeners (router.http)."""

    health: bool = True
    metrics: bool = True
    status: bool = True
    allow: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])  # may see metrics and status
    token: str | None = None  # or with `Authorization: Bearer <token>`
    networks: tuple = field(default=(), repr=False)  # `allow`, parsed

    def __post_init__(self) -> None:
        if not self.networks:
            self.networks = networks(self.allow)


MIN_TOKEN = 16  # characters of http.token: a short one is guessed


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
    # Admission (router/transport/admission.py); None: no limit. Per address: the client's (X-Forwarded-For
    # from a trusted proxy), per second: a token bucket holding one second's worth.
    max_connections_per_address: int | None = None
    connections_per_second_per_address: int | None = None
    connections_per_second: int | None = None  # the whole node's new connections
    max_sessions_per_authid: int | None = None  # per realm, on this node (anonymous sessions not counted)
    shutdown_grace: float = 5.0
    sweep_interval: float = 1.0
    realms: list[Realm] = field(default_factory=lambda: [_open_realm("realm1")])
    admin_realm: Realm = field(default_factory=lambda: _admin_realm("courtyard.admin", {}))
    data_dir: str | None = ".data"  # admin changes (from a file: relative to its directory); None: memory only
    cluster: ClusterConfig | None = None  # None: one node, nothing of Redis loaded
    workers: int = 1  # router processes sharing the listening ports (router/workers.py)
    http: HttpConfig = field(default_factory=HttpConfig)
    # `courtyard stop` and `status` find the node by it; None: none written. Default: in admin.data_dir.
    pid_file: str | None = None


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
    """Every bad key of the listener is reported, not only the first."""
    d = mapping(raw, path)
    default = ListenerConfig()
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, path, set(default.__dataclass_fields__))
    sers = d.get("serializers", default.serializers)
    if not isinstance(sers, list) or not sers or any(type(s) is not str or s not in SERIALIZERS for s in sers):
        errors.append(ConfigError(f"{path}.serializers",
                                  f"must be a non-empty list from {sorted(SERIALIZERS)}, got {sers!r}"))
    url_path = collect(errors, str_value, d, "path", path, default.path, default=default.path)
    if not url_path.startswith("/"):
        errors.append(ConfigError(f"{path}.path", f"must start with '/', got {url_path!r}"))
    kind = collect(errors, str_value, d, "type", path, default.type, LISTENER_TYPES, default=default.type)

    def value(fn: Callable, *args: Any) -> Any:
        return collect(errors, fn, *args)

    listener = ListenerConfig(
        type=kind,
        host=value(str_value, d, "host", path, default.host),
        port=value(int_value, d, "port", path, default.port, *LISTENER_INTS["port"]),
        path=url_path,
        serializers=list(sers) if isinstance(sers, list) else [],
        max_message_size=value(int_value, d, "max_message_size", path, default.max_message_size,
                               *LISTENER_INTS["max_message_size"]),
        max_depth=value(int_value, d, "max_depth", path, default.max_depth, *LISTENER_INTS["max_depth"]),
        max_outgoing_buffer=value(int_value, d, "max_outgoing_buffer", path, default.max_outgoing_buffer,
                                  *LISTENER_INTS["max_outgoing_buffer"]),
        slow_consumer=value(str_value, d, "slow_consumer", path, default.slow_consumer, SLOW_CONSUMER),
        slow_consumer_timeout=value(num_value, d, "slow_consumer_timeout", path, default.slow_consumer_timeout, 0.1),
        hello_timeout=value(_hello_timeout, d, path, default.hello_timeout),
        auto_ping_interval=value(_timer, d, "auto_ping_interval", path, default.auto_ping_interval),
        auto_ping_timeout=value(_timer, d, "auto_ping_timeout", path, default.auto_ping_timeout),
        trusted_proxies=value(_trusted_proxies, d.get("trusted_proxies", []), f"{path}.trusted_proxies", kind),
        tls=None if d.get("tls") is None else value(parse_tls, d["tls"], f"{path}.tls"),
        endpoint=value(_endpoint, d, path),
    )
    raise_any(errors)
    return listener


def _endpoint(d: dict, path: str) -> str | None:
    """A Twisted server endpoint description, parsed now so that a typo fails the config check."""
    if d.get("endpoint") is None:
        return None
    desc = str_value(d, "endpoint", path, "")
    if "host" in d or "port" in d:
        raise ConfigError(f"{path}.endpoint", "replaces host and port: give one or the other")
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, desc)
    except IndexError:  # systemd:…:index=N parses against the sockets this process inherited
        raise ConfigError(f"{path}.endpoint", f"no inherited socket at that index (systemd's LISTEN_FDS): {desc!r}") \
            from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"{path}.endpoint", f"not a Twisted server endpoint ({e}): {desc!r}") from None
    return desc


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


def _limits(limits: dict, default: NodeConfig) -> dict:
    """The `limits` section, as NodeConfig keyword arguments (every bad value reported)."""
    errors: list[ConfigError] = []

    def number(key: str, lo: int = 0, hi: int | None = None, required: bool = False) -> int | None:
        """An integer limit; `required`: one with no 'unlimited' (null) setting."""
        def read() -> int | None:
            v = int_value(limits, key, "limits", getattr(default, key), lo, hi)
            return _required(v, f"limits.{key}") if required else v
        return collect(errors, read)

    collect(errors, known_keys, limits, "limits", LIMIT_KEYS)
    found = dict(
        **{key: number(key, lo, hi, required) for key, (lo, hi, required) in LIMIT_INTS.items()},
        sequential_request_ids=collect(errors, bool_value, limits, "sequential_request_ids", "limits",
                                       default.sequential_request_ids),
    )
    raise_any(errors)
    return found


def _listeners(raw: Any, errors: list[ConfigError]) -> list[ListenerConfig]:
    """Each listener checked on its own; two on one host and port cannot both listen."""
    if not isinstance(raw, list) or not raw:
        errors.append(ConfigError("listeners", "must be a non-empty list"))
        return []
    listeners = [collect(errors, _listener, x, f"listeners[{i}]") for i, x in enumerate(raw)]
    seen: dict[tuple[str, int], int] = {}
    for i, lc in enumerate(listeners):
        if lc is None or lc.port == 0 or lc.endpoint is not None:  # port 0: a free one each time; an
            continue  # endpoint string replaces host and port (two equal ones fail when listening)
        if (lc.host, lc.port) in seen:
            errors.append(ConfigError(f"listeners[{i}].port", f"{lc.host}:{lc.port} is also "
                                                              f"listeners[{seen[lc.host, lc.port]}]'s"))
        seen.setdefault((lc.host, lc.port), i)
    return [lc for lc in listeners if lc is not None]


def _admin_users(admin: dict, errors: list[ConfigError]) -> dict:
    users = {}
    for authid, user in collect(errors, mapping, admin.get("users"), "admin.users", default={}).items():
        upath = f"admin.users.{authid}"
        raw = collect(errors, mapping, user, upath)
        if raw is not None:
            parsed = collect(errors, parse_user, str(authid), {"role": "admin", **raw}, upath)
            if parsed is not None:
                users[str(authid)] = parsed
    return users


def _sections(d: dict, errors: list[ConfigError]) -> dict:
    """Each top-level section as a mapping ({} and an error if it is not one)."""
    return {k: collect(errors, mapping, d.get(k), k, default={}) for k in ("node", "limits", "shutdown", "admin")}


def _node_id() -> str:
    """A default node id: the host's name and a random suffix, so two nodes on one host differ."""
    import secrets
    import socket

    return f"{socket.gethostname()[:40]}-{secrets.token_hex(3)}"


def _cluster(raw: Any) -> ClusterConfig | None:
    if raw is None:
        return None
    d = mapping(raw, "cluster")
    known_keys(d, "cluster", CLUSTER_KEYS)
    urls = d.get("redis", "redis://127.0.0.1:6379/0")
    if isinstance(urls, str):
        urls = [urls]
    if (not isinstance(urls, list) or not 1 <= len(urls) <= MAX_SHARDS
            or not all(isinstance(u, str) for u in urls)):
        raise ConfigError("cluster.redis", f"must be a Redis URL or a list of 1-{MAX_SHARDS} of them (one per "
                          f"shard), got {type(urls).__name__}" + (f" of {len(urls)}" if isinstance(urls, list) else ""))
    password = d.get("password")
    if password is not None and not isinstance(password, str):
        raise ConfigError("cluster.password", "must be a string")
    sentinel_password = d.get("sentinel_password")
    if sentinel_password is not None and not isinstance(sentinel_password, str):
        raise ConfigError("cluster.sentinel_password", "must be a string")
    sentinel_tls = d.get("sentinel_tls", False)
    if type(sentinel_tls) is not bool:
        raise ConfigError("cluster.sentinel_tls", f"must be true or false, got {sentinel_tls!r}")
    targets = []
    for i, url in enumerate(urls):
        key = "cluster.redis" if len(urls) == 1 else f"cluster.redis[{i}]"
        try:
            targets.append(parse_redis_url(url, password, sentinel_password, sentinel_tls))
        except ValueError as e:
            shown = repr(url) if "@" not in url else "a URL with a password (not shown)"
            raise ConfigError(key, f"{e}, got {shown}") from None
    if len({t.display() for t in targets}) < len(targets):
        raise ConfigError("cluster.redis", "names one shard twice")
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
    return ClusterConfig(targets[0], node_id, heartbeat, node_timeout, activity, tuple(targets))


def _bus_carries(listeners: list[ListenerConfig], errors: list[ConfigError]) -> None:
    """In a cluster what a listener accepts must fit in one bus item (router/cluster/limits.py), or a
    call or event would reach this node's peers and not the others': one limit, not two."""
    for i, lc in enumerate(listeners):
        if lc.max_message_size > MAX_ITEM_BYTES:
            errors.append(ConfigError(f"listeners[{i}].max_message_size",
                                      f"at most {MAX_ITEM_BYTES} bytes in a cluster (what one message between "
                                      f"nodes carries), got {lc.max_message_size}"))


MAX_WORKERS = 64


def _workers(n: Any, cluster: ClusterConfig | None, listeners: list[ListenerConfig]) -> int:
    """`node.workers`: more than one forms a cluster on `cluster:`'s Redis and shares each listener's
    host and port by SO_REUSEPORT, so every listener needs a fixed host and port."""
    if n is None:
        raise ConfigError("node.workers", "must be given, not null")
    if type(n) is not int or not 1 <= n <= MAX_WORKERS:
        raise ConfigError("node.workers", f"must be an integer 1..{MAX_WORKERS}, got {n!r}")
    if n == 1:
        return n
    if cluster is None:
        raise ConfigError("node.workers", f"{n} workers form one cluster on Redis: they need a cluster: section")
    suffix = f"-w{n - 1}"
    if len(cluster.node_id) + len(suffix) > 64:
        raise ConfigError("cluster.node_id", f"at most {64 - len(suffix)} characters with {n} workers "
                          f"(each adds {suffix!r} at most), got {len(cluster.node_id)}")
    for i, lc in enumerate(listeners):
        if lc.endpoint is not None:
            raise ConfigError(f"listeners[{i}].endpoint", "workers share a host and port (SO_REUSEPORT): "
                              "give host and port instead")
        if lc.port == 0:
            raise ConfigError(f"listeners[{i}].port", "workers share a port (SO_REUSEPORT): 0 (a free one "
                              "for each) cannot be shared")
    return n


def _http(raw: Any) -> HttpConfig:
    """The `http` section; every bad key reported."""
    d = mapping(raw, "http")
    default = HttpConfig()
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, "http", HTTP_KEYS)
    flags = {k: collect(errors, bool_value, d, k, "http", getattr(default, k), default=True) for k in HTTP_SWITCHES}
    allow = d.get("allow", default.allow)
    if not isinstance(allow, list) or len(allow) > 1024 or any(type(x) is not str for x in allow):
        errors.append(ConfigError("http.allow", f"must be a list of IP addresses or networks (at most 1024), "
                                                f"got {allow!r}"))
        allow = []
    for i, entry in enumerate(allow):
        try:
            networks([entry])
        except ValueError:
            errors.append(ConfigError(f"http.allow[{i}]",
                                      f"must be an IP address or network such as 10.0.0.0/8, got {entry!r}"))
    token = d.get("token")
    if token is not None and (not isinstance(token, str) or not MIN_TOKEN <= len(token) <= 1024
                              or not token.isascii() or not token.isprintable() or " " in token):
        errors.append(ConfigError("http.token", f"must be {MIN_TOKEN} to 1024 printable ASCII characters without "
                                                "spaces (e.g. from `openssl rand -hex 32`)"))
    raise_any(errors)
    return HttpConfig(allow=list(allow), token=token, **flags)


def _backend(storage: dict, cluster: ClusterConfig | None) -> str:
    """The session table's backend: a cluster shares its table in Redis, one node keeps it in memory."""
    backend = str_value(storage, "backend", "storage", "memory" if cluster is None else "redis", ("memory", "redis"))
    if backend == "redis" and cluster is None:
        raise ConfigError("storage.backend", "redis needs a cluster: section (or leave storage.backend out: "
                          "memory on one node, redis with cluster:)")
    if backend == "memory" and cluster is not None:
        raise ConfigError("storage.backend", "a cluster shares its session table in Redis: set it to redis, or "
                          "leave storage.backend out (it follows cluster:), got 'memory'")
    return backend


def _version(d: dict) -> None:
    """`version: 1`, the only format there is; a later one is refused rather than half read."""
    v = d.get("version", CONFIG_VERSION)
    if type(v) is not int or v != CONFIG_VERSION:
        raise ConfigError("version", f"must be {CONFIG_VERSION} (the config format this Courtyard reads), got {v!r}")


def parse(raw: Any) -> NodeConfig:
    """Validate a decoded YAML document into a NodeConfig. Every error found is raised at once
    (ConfigErrors; a ConfigError if only one), each naming its key path."""
    d = mapping(raw, "(top level)")
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, "", TOP_KEYS)
    collect(errors, _version, d)
    default = NodeConfig()
    sections = _sections(d, errors)
    node, shutdown, admin = sections["node"], sections["shutdown"], sections["admin"]
    collect(errors, known_keys, node, "node", NODE_KEYS)
    listeners = _listeners(d.get("listeners", [{}]), errors)
    storage = collect(errors, mapping, d.get("storage", {}), "storage", default={})
    collect(errors, known_keys, storage, "storage", STORAGE_KEYS)
    cluster = collect(errors, _cluster, d.get("cluster"))
    if cluster is not None:
        _bus_carries(listeners, errors)
    http = collect(errors, _http, d.get("http", {}), default=HttpConfig())
    backend = collect(errors, _backend, storage, cluster, default="memory")
    workers = collect(errors, _workers, node.get("workers", 1), cluster, listeners, default=1)
    limits = collect(errors, _limits, sections["limits"], default, default={})
    collect(errors, known_keys, shutdown, "shutdown", SHUTDOWN_KEYS)
    realms_raw = d.get("realms")
    realms: list[Realm] = []
    if realms_raw is None:
        realms = [_open_realm("realm1")]
    elif isinstance(realms_raw, list):
        realms = [collect(errors, parse_realm, x, f"realms[{i}]") for i, x in enumerate(realms_raw)]
    else:
        errors.append(ConfigError("realms", "must be a list"))
    collect(errors, known_keys, admin, "admin", ADMIN_KEYS)
    admin_uri = collect(errors, str_value, admin, "realm", "admin", "courtyard.admin", default="courtyard.admin")
    admin_realm = _admin_realm(admin_uri, _admin_users(admin, errors))
    data_dir = admin.get("data_dir", ".data")
    if data_dir is not None and not (isinstance(data_dir, str) and data_dir):
        errors.append(ConfigError("admin.data_dir", f"must be a directory path or null, got {data_dir!r}"))
    max_uri = limits.get("max_uri_length", default.max_uri_length)
    errors.extend(check_realm(admin_realm, "admin", max_uri, users_path="admin.users")[0])
    seen: set[str] = {admin_uri}
    for i, r in enumerate(realms):
        if r is None:
            continue
        if r.uri in seen:
            errors.append(ConfigError(f"realms[{i}].uri", f"realm {r.uri!r} is defined twice"))
        seen.add(r.uri)
        errors.extend(check_realm(r, f"realms[{i}]", max_uri)[0])
    name = collect(errors, str_value, node, "name", "node", default.name)
    shutdown_grace = collect(errors, num_value, shutdown, "grace_period", "shutdown", default.shutdown_grace)
    sweep_interval = collect(errors, num_value, node, "sweep_interval", "node", default.sweep_interval, 0.01)
    pid_file = node.get("pid_file", PID_DEFAULT)
    if pid_file is not None and not (isinstance(pid_file, str) and pid_file):
        errors.append(ConfigError("node.pid_file", f"must be a file path or null, got {pid_file!r}"))
    raise_any(errors)
    return NodeConfig(
        name=name,
        listeners=listeners,
        storage={"backend": backend},
        **limits,
        shutdown_grace=shutdown_grace,
        sweep_interval=sweep_interval,
        realms=realms,
        admin_realm=admin_realm,
        data_dir=data_dir,
        pid_file=pid_file,
        cluster=cluster,
        workers=workers,
        http=http,
    )


def warnings(cfg: NodeConfig) -> list[str]:
    """What works but is likely not what was meant (printed by check-config and start, never fatal)."""
    found = []
    for i, r in enumerate(cfg.realms):
        found.extend(check_realm(r, f"realms[{i}]", cfg.max_uri_length)[1])
    return found


def load(path: str | Path | None, workers: int | None = None) -> NodeConfig:
    """Read and validate a config file; None gives the embedded default. A relative `admin.data_dir`
    is taken from the file's directory (not the working directory), so the node finds its database
    wherever it is started from. `workers` (the command line's `--workers`) replaces `node.workers`,
    and is checked as it is."""
    if path is None:
        cfg = parse(_with_workers({}, workers))
        cfg.pid_file = pid_path(cfg, Path("."))
        return cfg
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror}")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), f"invalid YAML: {e}")
    cfg = parse(_with_workers(_relative_to(raw, Path(path).parent), workers))
    if cfg.data_dir is not None:
        cfg.data_dir = str(Path(path).parent / Path(cfg.data_dir).expanduser())
    cfg.pid_file = pid_path(cfg, Path(path).parent)
    return cfg


def pid_path(cfg: NodeConfig, base: Path) -> str | None:
    """Where the pid file goes: node.pid_file from the config file's directory, `{data_dir}` in it
    standing for admin.data_dir (the default, `{data_dir}/courtyard.pid`, without a data_dir: none)."""
    if cfg.pid_file is None or (DATA_DIR_MARK in cfg.pid_file and cfg.data_dir is None):
        return None
    return str(base / Path(cfg.pid_file.replace(DATA_DIR_MARK, cfg.data_dir or "")).expanduser())


def _relative_to(raw: Any, base: Path) -> Any:
    """The listeners' TLS file paths taken from the config file's directory, like `admin.data_dir`
    (shapes are left for `parse` to judge)."""
    listeners = raw.get("listeners") if isinstance(raw, dict) else None
    for lc in listeners if isinstance(listeners, list) else ():
        tls = lc.get("tls") if isinstance(lc, dict) else None
        if not isinstance(tls, dict):
            continue
        for key in ("certificate", "key", "ca_certificates", "key_password_file"):
            value = tls.get(key)
            if isinstance(value, str) and value:
                tls[key] = str(base / Path(value).expanduser())
            elif isinstance(value, list):
                tls[key] = [str(base / Path(v).expanduser()) if isinstance(v, str) and v else v for v in value]
    return raw


def _with_workers(raw: Any, workers: int | None) -> Any:
    raw = {} if raw is None else raw
    if workers is None or not isinstance(raw, dict) or not isinstance(raw.get("node") or {}, dict):
        return raw  # nothing to override, or a document whose own errors are reported as they are
    return {**raw, "node": {**(raw.get("node") or {}), "workers": workers}}
