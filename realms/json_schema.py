"""A realm definition as JSON Schema (draft 2020-12), for editors and for the published config schema
(router/config_schema.py). Built from realms/schema.py's key sets, bounds and the realm dataclasses'
defaults, so it says what the parser takes; the parser stays the judge (it also checks what a schema
cannot say: a user's role is defined, a credential matches an enabled method)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from realms.authorization import ACTIONS
from realms.realm import AuthConfig, SessionProcessConfig, Throttle
from realms.schema import (
    ANONYMOUS_KEYS,
    AUTH_KEYS,
    COOKIE_KEYS,
    CRA_KEYS,
    DISCLOSE,
    LIMITS_KEYS,
    MAILBOX_MAX,
    MATCHES,
    PERMISSION_KEYS,
    PROCESS_STARTS,
    PROCESS_THEN,
    REALM_KEYS,
    RESTART_KEYS,
    RESTART_MAX,
    ROLE_KEYS,
    SESSION_PROCESS_KEYS,
    THROTTLE_INTS,
    THROTTLE_NUMBERS,
    TICKET_PREFIX,
    USER_KEYS,
    WINDOW_KEYS,
)

NULL = {"type": "null"}


def section(keys: Collection[str], properties: dict[str, dict], description: str = "",
            nullable: bool = True) -> dict:
    """An object with exactly these keys (as the parser's known_keys); null means {} as in the parser.
    A key without a property, or a property the parser does not take, is a bug caught here."""
    if set(keys) != set(properties):
        raise ValueError(f"schema and parser disagree: {sorted(set(keys) ^ set(properties))}")
    schema: dict[str, Any] = {"type": ["object", "null"] if nullable else "object",
                              "properties": {k: properties[k] for k in keys}, "additionalProperties": False}
    if description:
        schema["description"] = description
    return schema


def integer(lo: int, hi: int | None = None, default: Any = None, nullable: bool = False, description: str = "") -> dict:
    schema: dict[str, Any] = {"type": ["integer", "null"] if nullable else "integer", "minimum": lo}
    if hi is not None:
        schema["maximum"] = hi
    return _describe(schema, default, description)


def number(lo: float, default: Any = None, nullable: bool = False, description: str = "") -> dict:
    return _describe({"type": ["number", "null"] if nullable else "number", "minimum": lo}, default, description)


def string(default: Any = None, description: str = "", **more: Any) -> dict:
    return _describe({"type": "string", "minLength": 1, **more}, default, description)


def boolean(default: bool, description: str = "") -> dict:
    return _describe({"type": "boolean"}, default, description)


def _describe(schema: dict, default: Any, description: str) -> dict:
    if default is not None:
        schema["default"] = default
    if description:
        schema["description"] = description
    return schema


def names(choices: tuple[str, ...], description: str) -> dict:
    """A list of names, or a mapping name -> boolean (parse_names)."""
    return {"description": description, "oneOf": [
        {"type": "array", "items": {"enum": list(choices)}},
        {"type": "object", "propertyNames": {"enum": list(choices)}, "additionalProperties": {"type": "boolean"}},
        NULL]}


def window(what: str) -> dict:
    return section(WINDOW_KEYS, {"limit": integer(1, description=f"{what} per duration"),
                                 "duration": number(0.001, description="seconds")},
                   f"at most `limit` {what} per `duration` seconds")


def limits() -> dict:
    return section(LIMITS_KEYS, {
        "rate": window("requests"), "quota": window("requests (a budget renewed every duration)"),
        "expires_in": number(0.001, nullable=True, description="the session's lifetime, seconds"),
        "idle_timeout": number(0.001, nullable=True, description="close a session silent this long, seconds"),
    }, "session limits")


def throttle() -> dict:
    default = Throttle()
    props = {k: integer(lo, hi, getattr(default, k)) for k, (lo, hi) in THROTTLE_INTS.items()}
    props["max_failures_per_address"]["description"] = "default: 10 x max_failures; 0: no such cap"
    props.update({k: number(lo, getattr(default, k), description="seconds") for k, lo in THROTTLE_NUMBERS.items()})
    return {"description": "failed-authentication throttle; false stops counting failures",
            "oneOf": [{"type": "boolean"}, section(Throttle.__dataclass_fields__, props)]}


def auth() -> dict:
    default = AuthConfig()
    anonymous = section(ANONYMOUS_KEYS, {"enabled": boolean(True),
                                         "authrole": string(default.anonymous_authrole)})
    cookie = section(COOKIE_KEYS, {"max_age": number(1, default.cookie_max_age, description="seconds")})
    return section(AUTH_KEYS, {
        "anonymous": {"description": ("anonymous clients (random authid); false: none; not given: on unless "
                                      "another method is named"),
                      "oneOf": [{"type": "boolean"}, anonymous]},
        "ticket": boolean(default.ticket, "ticket authentication (users' `ticket:`)"),
        "wampcra": boolean(default.wampcra, "WAMP-CRA (users' `wampcra:`)"),
        "cryptosign": boolean(default.cryptosign, "Ed25519 cryptosign (users' `cryptosign:`)"),
        "cookie": {"description": "WebSocket cookie authentication (cbtid)", "oneOf": [{"type": "boolean"}, cookie]},
        "throttle": throttle(),
    }, "authentication methods")


def user() -> dict:
    hex_key = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
    cra_plain = {"type": "object", "required": ["secret"], "properties": {"secret": string()},
                 "additionalProperties": False}
    salted = {"key": string(), "salt": string(), "iterations": integer(1, default=1000),
              "keylen": integer(1, default=32)}
    cra_salted = {"type": "object", "required": ["salt"], "properties": salted, "additionalProperties": False}
    if set(CRA_KEYS) != {"secret", *salted}:
        raise ValueError("schema and parser disagree on wampcra keys")
    return section(USER_KEYS, {
        "role": string(description="a role of the realm's roles"),
        "ticket": string(description="a salted hash from `courtyard auth hash-secret`",
                         pattern="^" + TICKET_PREFIX.replace("$", r"\$")),
        "wampcra": {"description": "the secret, or a salted key from `courtyard auth hash-secret --wampcra`",
                    "oneOf": [cra_plain, cra_salted]},
        "cryptosign": {"description": "Ed25519 public keys (hex) from `courtyard auth keygen`",
                       "oneOf": [hex_key, {"type": "array", "items": hex_key}]},
    }, nullable=False)


def role() -> dict:
    permission = section(PERMISSION_KEYS, {
        "uri": {"type": "string", "description": "\"\" with match prefix: every URI"},
        "match": {"enum": list(MATCHES), "default": "exact"},
        "allow": names(ACTIONS, "what the role may do on matching URIs"),
        "disclose": names(DISCLOSE, "whose session id is disclosed to the other side"),
    }, nullable=False)
    permission["required"] = ["uri"]
    return section(ROLE_KEYS, {"permissions": {"type": "array", "items": permission}, "limits": limits()})


def session_process() -> dict:
    default = SessionProcessConfig("")
    restart = section(RESTART_KEYS, {
        "max": integer(0, RESTART_MAX, default.restart_max, description="restarts allowed within `within`"),
        "within": number(0.001, default.restart_within, description="seconds"),
        "then": {"enum": list(PROCESS_THEN), "default": default.then,
                 "description": "after too many restarts: stop the process, or end the session too"},
    }, "supervision")
    schema = section(SESSION_PROCESS_KEYS, {
        "class": string(description="package.module:Class, imported by the config check", pattern="^[^:]+:[^:]+$"),
        "start": {"enum": list(PROCESS_STARTS), "default": default.start},
        "mailbox": integer(1, MAILBOX_MAX, default.mailbox, description="requests waiting; more: process_busy"),
        "call_timeout": number(0.001, default.call_timeout, description="seconds; then wamp.error.timeout"),
        "restart": restart,
    }, "a supervised process per session (docs/session-processes.md)")
    schema["required"] = ["class"]
    return schema


def realm() -> dict:
    schema = section(REALM_KEYS, {
        "uri": string(description="the realm's URI, as clients name it in HELLO"),
        "auth": auth(),
        "users": {"type": ["object", "null"], "additionalProperties": user(), "description": "authid -> user"},
        "roles": {"type": ["object", "null"], "additionalProperties": role(),
                  "description": "role name -> permissions and limits; no roles: everyone may do everything"},
        "limits": limits(),
        "session_process": session_process(),
    }, "a realm", nullable=False)
    schema["required"] = ["uri"]
    return schema
