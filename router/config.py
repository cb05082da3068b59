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
from realms.realm import AuthConfig, CraSecret, Limits, Realm, User, Window
from router.serializers import SERIALIZERS


class ConfigError(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class ListenerConfig:
    type: str = "websocket"
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/ws"
    serializers: list[str] = field(default_factory=lambda: ["json", "msgpack", "cbor"])
    max_message_size: int = 1024 * 1024
    max_outgoing_buffer: int = 4 * 1024 * 1024
    slow_consumer: str = "drop"  # past max_outgoing_buffer: drop EVENTs, or disconnect
    hello_timeout: float = 10.0
    auto_ping_interval: float = 0.0
    auto_ping_timeout: float = 0.0


def _open_realm(uri: str) -> Realm:
    """The embedded default realm: anonymous clients with every permission."""
    everything = Permission(uri="", match="prefix", allow=frozenset(ACTIONS))
    return Realm(uri, roles={"anonymous": Role("anonymous", (everything,))})


@dataclass
class NodeConfig:
    name: str = "courtyard"
    listeners: list[ListenerConfig] = field(default_factory=lambda: [ListenerConfig()])
    storage: dict = field(default_factory=lambda: {"backend": "memory"})
    max_sessions: int | None = 100_000
    max_pending_calls: int | None = 1_000
    shutdown_grace: float = 5.0
    sweep_interval: float = 1.0
    realms: list[Realm] = field(default_factory=lambda: [_open_realm("realm1")])


# -- small typed readers: each takes the mapping, the key, its path, and a default ------------------
def _mapping(value: Any, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping, not {type(value).__name__}")
    return value


def _known(d: dict, path: str, keys: set[str]) -> None:
    for k in d:
        if k not in keys:
            raise ConfigError(f"{path}.{k}" if path else str(k), f"unknown key (expected one of {sorted(keys)})")


def _int(d: dict, key: str, path: str, default: int | None, lo: int = 0, hi: int | None = None) -> int | None:
    v = d.get(key, default)
    if v is None:
        return None
    if type(v) is not int or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{path}.{key}", f"must be an integer {rng}, got {v!r}")
    return v


def _num(d: dict, key: str, path: str, default: float | None, lo: float = 0.0) -> float | None:
    v = d.get(key, default)
    if v is None:
        return None
    if type(v) not in (int, float) or v < lo:
        raise ConfigError(f"{path}.{key}", f"must be a number >= {lo}, got {v!r}")
    return float(v)


def _str(d: dict, key: str, path: str, default: str, choices: tuple[str, ...] | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{path}.{key}", f"must be a non-empty string, got {v!r}")
    if choices and v not in choices:
        raise ConfigError(f"{path}.{key}", f"must be one of {list(choices)}, got {v!r}")
    return v


def _bool(d: dict, key: str, path: str, default: bool) -> bool:
    v = d.get(key, default)
    if type(v) is not bool:
        raise ConfigError(f"{path}.{key}", f"must be true or false, got {v!r}")
    return v


# -- sections --------------------------------------------------------------------------------------
def _timer(d: dict, key: str, path: str, default: float) -> float:
    """Autobahn's WebSocket timers are quantized to whole seconds, so a value must be 0 (off) or >= 1."""
    v = _num(d, key, path, default)
    if 0 < v < 1:
        raise ConfigError(f"{path}.{key}", f"must be 0 (off) or at least 1 second, got {v!r}")
    return v


def _listener(raw: Any, path: str) -> ListenerConfig:
    d = _mapping(raw, path)
    default = ListenerConfig()
    _known(d, path, set(default.__dataclass_fields__))
    sers = d.get("serializers", default.serializers)
    if not isinstance(sers, list) or not sers or any(s not in SERIALIZERS for s in sers):
        raise ConfigError(f"{path}.serializers", f"must be a non-empty list from {sorted(SERIALIZERS)}, got {sers!r}")
    url_path = _str(d, "path", path, default.path)
    if not url_path.startswith("/"):
        raise ConfigError(f"{path}.path", f"must start with '/', got {url_path!r}")
    return ListenerConfig(
        type=_str(d, "type", path, default.type, ("websocket", "rawsocket")),
        host=_str(d, "host", path, default.host),
        port=_int(d, "port", path, default.port, 0, 65535),
        path=url_path,
        serializers=list(sers),
        max_message_size=_int(d, "max_message_size", path, default.max_message_size, 64),
        max_outgoing_buffer=_int(d, "max_outgoing_buffer", path, default.max_outgoing_buffer, 1024),
        slow_consumer=_str(d, "slow_consumer", path, default.slow_consumer, ("drop", "disconnect")),
        hello_timeout=_timer(d, "hello_timeout", path, default.hello_timeout),
        auto_ping_interval=_timer(d, "auto_ping_interval", path, default.auto_ping_interval),
        auto_ping_timeout=_timer(d, "auto_ping_timeout", path, default.auto_ping_timeout),
    )


def _window(raw: Any, path: str) -> Window | None:
    if raw is None:
        return None
    d = _mapping(raw, path)
    _known(d, path, {"limit", "duration"})
    if "limit" not in d or "duration" not in d:
        raise ConfigError(path, "needs both 'limit' and 'duration'")
    return Window(_int(d, "limit", path, None, 1), _num(d, "duration", path, None, 0.001))


def _limits(raw: Any, path: str) -> Limits:
    d = _mapping(raw, path)
    _known(d, path, {"rate", "quota", "expires_in", "idle_timeout"})
    return Limits(
        rate=_window(d.get("rate"), f"{path}.rate"),
        quota=_window(d.get("quota"), f"{path}.quota"),
        expires_in=_num(d, "expires_in", path, None, 0.001),
        idle_timeout=_num(d, "idle_timeout", path, None, 0.001),
    )


def _names(raw: Any, path: str, choices: tuple[str, ...]) -> frozenset[str]:
    """A set of names, as a list (`[call, publish]`) or a mapping of booleans (`{call: true}`)."""
    if raw is None:
        return frozenset()
    if isinstance(raw, dict):
        for k, v in raw.items():
            if type(v) is not bool:
                raise ConfigError(f"{path}.{k}", f"must be true or false, got {v!r}")
        raw = [k for k, v in raw.items() if v]
    if not isinstance(raw, list) or any(x not in choices for x in raw):
        raise ConfigError(path, f"must be a list from {list(choices)}, got {raw!r}")
    return frozenset(raw)


def _permission(raw: Any, path: str) -> Permission:
    d = _mapping(raw, path)
    _known(d, path, {"uri", "match", "allow", "disclose"})
    uri = d.get("uri")
    if not isinstance(uri, str):
        raise ConfigError(f"{path}.uri", f"must be a string (\"\" with match prefix for every URI), got {uri!r}")
    return Permission(uri=uri, match=_str(d, "match", path, "exact", ("exact", "prefix", "wildcard")),
                      allow=_names(d.get("allow"), f"{path}.allow", ACTIONS),
                      disclose=_names(d.get("disclose"), f"{path}.disclose", ("caller", "publisher")))


def _role(name: str, raw: Any, path: str) -> Role:
    d = _mapping(raw, path)
    _known(d, path, {"permissions", "limits"})
    perms = d.get("permissions", [])
    if not isinstance(perms, list):
        raise ConfigError(f"{path}.permissions", "must be a list")
    return Role(name, tuple(_permission(p, f"{path}.permissions[{i}]") for i, p in enumerate(perms)),
                _limits(d["limits"], f"{path}.limits") if "limits" in d else None)


def _auth(raw: Any, path: str) -> AuthConfig:
    d = _mapping(raw, path)
    _known(d, path, {"anonymous", "ticket", "wampcra", "cryptosign", "cookie", "throttle"})
    default = AuthConfig()
    anon = d.get("anonymous", {})
    if anon is False:
        anon = {"enabled": False}
    anon = _mapping({} if anon is True else anon, f"{path}.anonymous")
    _known(anon, f"{path}.anonymous", {"enabled", "authrole"})
    cookie = d.get("cookie", False)
    cookie_d = _mapping({} if isinstance(cookie, bool) else cookie, f"{path}.cookie")
    _known(cookie_d, f"{path}.cookie", {"max_age"})
    throttle = _mapping(d.get("throttle"), f"{path}.throttle")
    _known(throttle, f"{path}.throttle", {"max_failures", "window", "block_for"})
    return AuthConfig(
        anonymous=_bool(anon, "enabled", f"{path}.anonymous", True),
        anonymous_authrole=_str(anon, "authrole", f"{path}.anonymous", default.anonymous_authrole),
        ticket=_bool(d, "ticket", path, False),
        wampcra=_bool(d, "wampcra", path, False),
        cryptosign=_bool(d, "cryptosign", path, False),
        cookie=cookie is not False,
        cookie_max_age=_num(cookie_d, "max_age", f"{path}.cookie", default.cookie_max_age, 1),
        max_failures=_int(throttle, "max_failures", f"{path}.throttle", default.max_failures, 1),
        failure_window=_num(throttle, "window", f"{path}.throttle", default.failure_window, 0.001),
        block_for=_num(throttle, "block_for", f"{path}.throttle", default.block_for),
    )


def _user(authid: str, raw: Any, path: str) -> User:
    d = _mapping(raw, path)
    _known(d, path, {"role", "ticket", "wampcra", "cryptosign"})
    ticket = d.get("ticket")
    if ticket is not None and not (isinstance(ticket, str) and ticket.startswith("pbkdf2-sha256$")):
        raise ConfigError(f"{path}.ticket", "must be a salted hash from `courtyard auth hash-secret` "
                                            "(pbkdf2-sha256$...), never the plain ticket")
    cra = None
    if d.get("wampcra") is not None:
        c = _mapping(d["wampcra"], f"{path}.wampcra")
        _known(c, f"{path}.wampcra", {"secret", "key", "salt", "iterations", "keylen"})
        if "salt" in c:
            cra = CraSecret(key=_str(c, "key", f"{path}.wampcra", ""), salt=_str(c, "salt", f"{path}.wampcra", ""),
                            iterations=_int(c, "iterations", f"{path}.wampcra", 1000, 1),
                            keylen=_int(c, "keylen", f"{path}.wampcra", 32, 1))
        else:
            cra = CraSecret(key=_str(c, "secret", f"{path}.wampcra", ""))
    keys = d.get("cryptosign", [])
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or any(not isinstance(k, str) or len(k) != 64 for k in keys):
        raise ConfigError(f"{path}.cryptosign", "must be a list of Ed25519 public keys, 64 hex characters each")
    for k in keys:
        try:
            bytes.fromhex(k)
        except ValueError:
            raise ConfigError(f"{path}.cryptosign", f"not hex: {k!r}")
    return User(authid, _str(d, "role", path, ""), ticket, cra, tuple(k.lower() for k in keys))


def _realm(raw: Any, path: str) -> Realm:
    d = _mapping(raw, path)
    _known(d, path, {"uri", "auth", "users", "roles", "limits"})
    users = _mapping(d.get("users"), f"{path}.users")
    roles = d.get("roles")
    return Realm(
        uri=_str(d, "uri", path, ""),
        auth=_auth(d.get("auth"), f"{path}.auth"),
        users={str(k): _user(str(k), v, f"{path}.users.{k}") for k, v in users.items()},
        roles=None if roles is None else {
            str(k): _role(str(k), v, f"{path}.roles.{k}") for k, v in _mapping(roles, f"{path}.roles").items()},
        limits=_limits(d.get("limits"), f"{path}.limits"),
    )


def parse(raw: Any) -> NodeConfig:
    """Validate a decoded YAML document into a NodeConfig; raises ConfigError naming the key path."""
    d = _mapping(raw, "(top level)")
    _known(d, "", {"node", "listeners", "storage", "limits", "shutdown", "realms"})
    default = NodeConfig()
    node = _mapping(d.get("node"), "node")
    _known(node, "node", {"name", "sweep_interval"})
    listeners_raw = d.get("listeners", [{}])
    if not isinstance(listeners_raw, list) or not listeners_raw:
        raise ConfigError("listeners", "must be a non-empty list")
    listeners = [_listener(x, f"listeners[{i}]") for i, x in enumerate(listeners_raw)]
    storage = _mapping(d.get("storage", default.storage), "storage")
    _known(storage, "storage", {"backend"})
    _str(storage, "backend", "storage", "memory", ("memory",))
    limits = _mapping(d.get("limits"), "limits")
    _known(limits, "limits", {"max_sessions", "max_pending_calls"})
    shutdown = _mapping(d.get("shutdown"), "shutdown")
    _known(shutdown, "shutdown", {"grace_period"})
    realms_raw = d.get("realms")
    if realms_raw is None:
        realms = [_open_realm("realm1")]
    elif isinstance(realms_raw, list):
        realms = [_realm(x, f"realms[{i}]") for i, x in enumerate(realms_raw)]
    else:
        raise ConfigError("realms", "must be a list")
    seen: set[str] = set()
    for i, r in enumerate(realms):
        if r.uri in seen:
            raise ConfigError(f"realms[{i}].uri", f"realm {r.uri!r} is defined twice")
        seen.add(r.uri)
    return NodeConfig(
        name=_str(node, "name", "node", default.name),
        listeners=listeners,
        storage={"backend": storage.get("backend", "memory")},
        max_sessions=_int(limits, "max_sessions", "limits", default.max_sessions, 1),
        max_pending_calls=_int(limits, "max_pending_calls", "limits", default.max_pending_calls, 1),
        shutdown_grace=_num(shutdown, "grace_period", "shutdown", default.shutdown_grace),
        sweep_interval=_num(node, "sweep_interval", "node", default.sweep_interval, 0.01),
        realms=realms,
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
