"""The realm definition format: how a realm, its auth methods, users, roles and limits are written in
YAML (the config file) or JSON (the admin API), validated into `realms.realm` objects.

Every error names the key path. `router.config` reads the rest of a node's config with the same readers.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from realms.authorization import ACTIONS, Permission, Role
from realms.realm import AuthConfig, CraSecret, Limits, Realm, SessionProcessConfig, Throttle, User, Window


class ConfigError(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigErrors(ConfigError):
    """Every error found in one pass, so a config is fixed in one round: each still names its key path."""

    def __init__(self, errors: list[ConfigError]) -> None:
        ValueError.__init__(self, "\n".join(str(e) for e in errors))
        self.errors = errors
        self.path, self.reason = errors[0].path, errors[0].reason


T = TypeVar("T")

# The keys and bounds of each part of a realm definition: the parsers below and the JSON Schema
# (realms/json_schema.py) read these same definitions, so the two cannot drift apart.
REALM_KEYS = ("uri", "auth", "users", "roles", "limits", "session_process")
SESSION_PROCESS_KEYS = ("class", "start", "mailbox", "call_timeout", "restart")
RESTART_KEYS = ("max", "within", "then")
PROCESS_STARTS = ("on_join", "on_demand")
PROCESS_THEN = ("stop", "kill_session")
MAILBOX_MAX = 100_000
RESTART_MAX = 1000
AUTH_KEYS = ("anonymous", "ticket", "wampcra", "cryptosign", "cookie", "throttle")
ANONYMOUS_KEYS = ("enabled", "authrole")
COOKIE_KEYS = ("max_age",)
USER_KEYS = ("role", "ticket", "wampcra", "cryptosign")
CRA_KEYS = ("secret", "key", "salt", "iterations", "keylen")
ROLE_KEYS = ("permissions", "limits")
PERMISSION_KEYS = ("uri", "match", "allow", "disclose")
MATCHES = ("exact", "prefix", "wildcard")
DISCLOSE = ("caller", "publisher")
LIMITS_KEYS = ("rate", "quota", "expires_in", "idle_timeout")
WINDOW_KEYS = ("limit", "duration")
THROTTLE_INTS = {"max_failures": (0, 10_000), "max_failures_per_address": (0, 1_000_000),  # key: (lo, hi)
                 "max_in_flight_per_address": (1, 100_000), "max_in_flight": (1, 100_000),
                 "max_waiting_per_address": (0, 10_000)}
THROTTLE_NUMBERS = {"window": 0.001, "block_for": 0.0}  # key: lo
TICKET_PREFIX = "pbkdf2-sha256$"


def collect(errors: list[ConfigError], fn: Callable[..., T], *args: Any, default: Any = None) -> T:
    """fn(*args), or `default` after adding what was wrong to `errors`: a bad part does not hide the next."""
    try:
        return fn(*args)
    except ConfigErrors as e:
        errors.extend(e.errors)
    except ConfigError as e:
        errors.append(e)
    return default


def raise_any(errors: list[ConfigError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


# -- small typed readers: each takes the mapping, the key, its path, and a default ------------------
def mapping(value: Any, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping, not {type(value).__name__}")
    return value


def known_keys(d: dict, path: str, keys: Collection[str]) -> None:
    for k in d:
        if k not in keys:
            raise ConfigError(f"{path}.{k}" if path else str(k), f"unknown key (expected one of {sorted(keys)})")


def int_value(d: dict, key: str, path: str, default: int | None, lo: int = 0, hi: int | None = None) -> int | None:
    v = d.get(key, default)
    if v is None:
        return None
    if type(v) is not int or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{path}.{key}", f"must be an integer {rng}, got {v!r}")
    return v


def num_value(d: dict, key: str, path: str, default: float | None, lo: float = 0.0) -> float | None:
    v = d.get(key, default)
    if v is None:
        return None
    if type(v) not in (int, float) or v < lo:
        raise ConfigError(f"{path}.{key}", f"must be a number >= {lo}, got {v!r}")
    return float(v)


def str_value(d: dict, key: str, path: str, default: str, choices: tuple[str, ...] | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{path}.{key}", f"must be a non-empty string, got {v!r}")
    if choices and v not in choices:
        raise ConfigError(f"{path}.{key}", f"must be one of {list(choices)}, got {v!r}")
    return v


def bool_value(d: dict, key: str, path: str, default: bool) -> bool:
    v = d.get(key, default)
    if type(v) is not bool:
        raise ConfigError(f"{path}.{key}", f"must be true or false, got {v!r}")
    return v


# -- sections --------------------------------------------------------------------------------------
def parse_window(raw: Any, path: str) -> Window | None:
    if raw is None:
        return None
    d = mapping(raw, path)
    known_keys(d, path, WINDOW_KEYS)
    if "limit" not in d or "duration" not in d:
        raise ConfigError(path, "needs both 'limit' and 'duration'")
    return Window(int_value(d, "limit", path, None, 1), num_value(d, "duration", path, None, 0.001))


def parse_limits(raw: Any, path: str) -> Limits:
    d = mapping(raw, path)
    known_keys(d, path, LIMITS_KEYS)
    return Limits(
        rate=parse_window(d.get("rate"), f"{path}.rate"),
        quota=parse_window(d.get("quota"), f"{path}.quota"),
        expires_in=num_value(d, "expires_in", path, None, 0.001),
        idle_timeout=num_value(d, "idle_timeout", path, None, 0.001),
    )


def parse_names(raw: Any, path: str, choices: tuple[str, ...]) -> frozenset[str]:
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


def parse_permission(raw: Any, path: str) -> Permission:
    d = mapping(raw, path)
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, path, PERMISSION_KEYS)
    uri = d.get("uri")
    if not isinstance(uri, str):
        errors.append(ConfigError(f"{path}.uri",
                                  f"must be a string (\"\" with match prefix for every URI), got {uri!r}"))
    perm = Permission(uri=uri if isinstance(uri, str) else "",
                      match=collect(errors, str_value, d, "match", path, "exact", MATCHES,
                                    default="exact"),
                      allow=collect(errors, parse_names, d.get("allow"), f"{path}.allow", ACTIONS, default=frozenset()),
                      disclose=collect(errors, parse_names, d.get("disclose"), f"{path}.disclose",
                                       DISCLOSE, default=frozenset()))
    raise_any(errors)
    return perm


def parse_role(name: str, raw: Any, path: str) -> Role:
    d = mapping(raw, path)
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, path, ROLE_KEYS)
    perms = d.get("permissions", [])
    if not isinstance(perms, list):
        errors.append(ConfigError(f"{path}.permissions", "must be a list"))
        perms = []
    role = Role(name, tuple(collect(errors, parse_permission, p, f"{path}.permissions[{i}]")
                            for i, p in enumerate(perms)),
                collect(errors, parse_limits, d["limits"], f"{path}.limits") if "limits" in d else None)
    raise_any(errors)
    return role


def parse_auth(raw: Any, path: str) -> AuthConfig:
    d = mapping(raw, path)
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, path, AUTH_KEYS)
    default = AuthConfig()
    anon = d.get("anonymous", {})
    if anon is False:
        anon = {"enabled": False}
    anon = collect(errors, mapping, {} if anon is True else anon, f"{path}.anonymous", default={})
    collect(errors, known_keys, anon, f"{path}.anonymous", ANONYMOUS_KEYS)
    cookie = d.get("cookie", False)
    cookie_d = collect(errors, mapping, {} if isinstance(cookie, bool) else cookie, f"{path}.cookie", default={})
    collect(errors, known_keys, cookie_d, f"{path}.cookie", COOKIE_KEYS)
    auth = AuthConfig(
        # Not given: on, unless another method is named (`auth: {ticket: true}` means ticket only).
        anonymous=collect(errors, bool_value, anon, "enabled", f"{path}.anonymous",
                          "anonymous" in d or not any(d.get(m) for m in ("ticket", "wampcra", "cryptosign", "cookie"))),
        anonymous_authrole=collect(errors, str_value, anon, "authrole", f"{path}.anonymous",
                                   default.anonymous_authrole),
        ticket=collect(errors, bool_value, d, "ticket", path, False),
        wampcra=collect(errors, bool_value, d, "wampcra", path, False),
        cryptosign=collect(errors, bool_value, d, "cryptosign", path, False),
        cookie=cookie is not False,
        cookie_max_age=collect(errors, num_value, cookie_d, "max_age", f"{path}.cookie", default.cookie_max_age, 1),
        throttle=collect(errors, parse_throttle, d.get("throttle"), f"{path}.throttle"),
    )
    raise_any(errors)
    return auth


def parse_throttle(raw: Any, path: str) -> Throttle:
    """`throttle: false` stops counting failures (the in-flight caps stay: they bound work, not guesses)."""
    if raw is False:
        return Throttle(max_failures=0)
    d = mapping({} if raw is True else raw, path)
    known_keys(d, path, set(Throttle.__dataclass_fields__))
    default = Throttle()
    max_failures = int_value(d, "max_failures", path, default.max_failures, *THROTTLE_INTS["max_failures"])
    defaults = {**default.__dict__, "max_failures_per_address": 10 * (max_failures or 0)}
    return Throttle(
        max_failures=max_failures,
        **{k: int_value(d, k, path, defaults[k], *bounds)
           for k, bounds in THROTTLE_INTS.items() if k != "max_failures"},
        **{k: num_value(d, k, path, defaults[k], lo) for k, lo in THROTTLE_NUMBERS.items()},
    )


def _ticket(d: dict, path: str) -> str | None:
    ticket = d.get("ticket")
    if ticket is not None and not (isinstance(ticket, str) and ticket.startswith(TICKET_PREFIX)):
        raise ConfigError(f"{path}.ticket", "must be a salted hash from `courtyard auth hash-secret` "
                                            "(pbkdf2-sha256$...), never the plain ticket")
    return ticket


def _wampcra(raw: Any, path: str) -> CraSecret | None:
    if raw is None:
        return None
    c = mapping(raw, path)
    known_keys(c, path, CRA_KEYS)
    if "salt" in c:
        return CraSecret(key=str_value(c, "key", path, ""), salt=str_value(c, "salt", path, ""),
                         iterations=int_value(c, "iterations", path, 1000, 1),
                         keylen=int_value(c, "keylen", path, 32, 1))
    return CraSecret(key=str_value(c, "secret", path, ""))


def _cryptosign(keys: Any, path: str) -> tuple[str, ...]:
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or any(not isinstance(k, str) or len(k) != 64 for k in keys):
        raise ConfigError(path, "must be a list of Ed25519 public keys, 64 hex characters each")
    for k in keys:
        try:
            bytes.fromhex(k)
        except ValueError:
            raise ConfigError(path, f"not hex: {k!r}")
    return tuple(k.lower() for k in keys)


def parse_user(authid: str, raw: Any, path: str) -> User:
    d = mapping(raw, path)
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, path, USER_KEYS)
    user = User(authid, collect(errors, str_value, d, "role", path, "", default=""),
                collect(errors, _ticket, d, path), collect(errors, _wampcra, d.get("wampcra"), f"{path}.wampcra"),
                collect(errors, _cryptosign, d.get("cryptosign", []), f"{path}.cryptosign", default=()))
    raise_any(errors)
    return user


def import_class(spec: Any, path: str) -> Any:
    """`package.module:Class`, imported now: a path that does not import, or names no class with a
    `handle_call`, is a config error naming the key, not a failure when the first session joins."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ConfigError(path, f"must be 'package.module:Class', got {spec!r}"[:200])
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or anything the module's own code raised while importing
        raise ConfigError(path, f"cannot import {module_name!r}: {type(e).__name__}: {e}"[:300]) from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not callable(getattr(cls, "handle_call", None)):
        raise ConfigError(path, f"{module_name!r} has no class {name!r} with a handle_call method"[:300])
    return cls


def parse_session_process(raw: Any, path: str) -> SessionProcessConfig | None:
    """`session_process: {class, start, mailbox, call_timeout, restart: {max, within, then}}`."""
    if raw is None:
        return None
    d = mapping(raw, path)
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, path, SESSION_PROCESS_KEYS)
    restart = collect(errors, mapping, d.get("restart"), f"{path}.restart", default={})
    collect(errors, known_keys, restart, f"{path}.restart", RESTART_KEYS)
    default = SessionProcessConfig("")
    if "class" not in d:
        errors.append(ConfigError(f"{path}.class", "required: the process class, 'package.module:Class'"))
    factory = collect(errors, import_class, d["class"], f"{path}.class") if "class" in d else None
    config = SessionProcessConfig(
        cls=d.get("class") if isinstance(d.get("class"), str) else "",
        factory=factory,
        start=collect(errors, str_value, d, "start", path, default.start, PROCESS_STARTS),
        mailbox=collect(errors, int_value, d, "mailbox", path, default.mailbox, 1, MAILBOX_MAX),
        call_timeout=collect(errors, num_value, d, "call_timeout", path, default.call_timeout, 0.001),
        restart_max=collect(errors, int_value, restart, "max", f"{path}.restart", default.restart_max, 0, RESTART_MAX),
        restart_within=collect(errors, num_value, restart, "within", f"{path}.restart", default.restart_within,
                               0.001),
        then=collect(errors, str_value, restart, "then", f"{path}.restart", default.then, PROCESS_THEN),
    )
    raise_any(errors)
    return config


def parse_realm(raw: Any, path: str) -> Realm:
    """Every bad user, role and section is reported (ConfigErrors), not only the first."""
    d = mapping(raw, path)
    errors: list[ConfigError] = []
    collect(errors, known_keys, d, path, REALM_KEYS)
    users = collect(errors, mapping, d.get("users"), f"{path}.users", default={})
    roles_raw = d.get("roles")
    roles = None if roles_raw is None else collect(errors, mapping, roles_raw, f"{path}.roles", default={})
    realm = Realm(
        uri=collect(errors, str_value, d, "uri", path, "", default=""),
        auth=collect(errors, parse_auth, d.get("auth"), f"{path}.auth", default=AuthConfig()),
        users={str(k): u for k, v in users.items()
               if (u := collect(errors, parse_user, str(k), v, f"{path}.users.{k}")) is not None},
        roles=None if roles is None else {
            str(k): r for k, v in roles.items()
            if (r := collect(errors, parse_role, str(k), v, f"{path}.roles.{k}")) is not None},
        limits=collect(errors, parse_limits, d.get("limits"), f"{path}.limits", default=Limits()),
        definition=dict(d),
        session_process=collect(errors, parse_session_process, d.get("session_process"), f"{path}.session_process"),
    )
    raise_any(errors)
    return realm


def apply_changes(base: Realm, changes: Any, path: str) -> Realm:
    """`base` with the given top-level keys (auth, roles, limits) replaced: what the admin realm's
    `courtyard.realm.update` does. Users and who may join stay (the admin realm stays closed)."""
    changes = {k: v for k, v in mapping(changes, path).items() if k not in ("uri", "users")}
    raw = {k: v for k, v in copy.deepcopy(base.definition).items() if k != "users"}
    raw.update(changes, uri=base.uri)
    realm = parse_realm(raw, path)
    realm.users = base.users
    realm.join_roles = base.join_roles
    if "roles" not in raw:  # roles not written in a definition (the admin realm's) stay as they were
        realm.roles = base.roles
    return realm
