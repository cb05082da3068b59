"""The node config as JSON Schema, for editors (`# yaml-language-server: $schema=…`) and linters:
`courtyard schema` prints it, and config/courtyard.schema.json is its published copy (a test keeps the
two equal). Built from router/config.py's key sets, bounds and dataclass defaults and from the realm
schema (realms/json_schema.py), so it takes exactly the keys the parser takes. It describes shapes
only: `courtyard check-config` also finds what cannot work (roles, credentials, clashing ports, files)."""

from __future__ import annotations

import json
from dataclasses import fields

from realms import json_schema as js
from router import config as c
from router.serializers import SERIALIZERS
from router.transport.tls import TLS_KEYS


def _listener() -> dict:
    d = c.ListenerConfig()
    timer = {"description": "seconds; 0: off, else at least 1 (Autobahn's timers tick in whole seconds)",
             "oneOf": [{"const": 0}, {"type": "number", "minimum": 1}], "default": 0}
    props = {
        "type": {"enum": list(c.LISTENER_TYPES), "default": d.type},
        "host": js.string(d.host, "the address to listen on"),
        "path": js.string(d.path, "the WebSocket path", pattern="^/"),
        "serializers": {"type": "array", "minItems": 1, "items": {"enum": sorted(SERIALIZERS)},
                        "default": d.serializers},
        **{k: js.integer(lo, hi, getattr(d, k)) for k, (lo, hi) in c.LISTENER_INTS.items()},
        "slow_consumer": {"enum": list(c.SLOW_CONSUMER), "default": d.slow_consumer},
        "slow_consumer_timeout": js.number(0.1, d.slow_consumer_timeout, description="seconds"),
        "hello_timeout": js.number(1, d.hello_timeout, description="seconds; at least 1, never off"),
        "auto_ping_interval": timer,
        "auto_ping_timeout": timer,
        "trusted_proxies": {"type": "array", "maxItems": 1024, "items": {"type": "string"},
                            "description": "addresses or networks of reverse proxies whose X-Forwarded-For counts"},
        "tls": {"oneOf": [js.NULL, _tls()]},
        "endpoint": {"type": ["string", "null"], "minLength": 1,
                     "description": "a Twisted server endpoint string instead of host and port"},
    }
    return js.section([f.name for f in fields(c.ListenerConfig)], props, "where clients connect", nullable=True)


def _tls() -> dict:
    path = {"type": "string", "minLength": 1}
    schema = js.section(TLS_KEYS, {
        "certificate": {**path, "description": "PEM: the certificate, then any intermediates"},
        "key": {**path, "description": "PEM; encrypted: give key_password_file"},
        "ca_certificates": {"oneOf": [path, {"type": "array", "items": path}],
                            "description": "clients must present a certificate signed by one"},
        "ciphers": {**path, "description": "OpenSSL cipher string for TLS 1.2"},
        "key_password_file": {**path, "description": "a file whose first line is the password of an encrypted key"},
    }, "wss:// or RawSocket over TLS", nullable=False)
    schema["required"] = ["certificate", "key"]
    return schema


ADMISSION = {  # limits.<key>: what it refuses (docs/operations.md, Admission)
    "max_connections_per_address": "open connections from one client address; null: no limit",
    "connections_per_second_per_address": "new connections a second from one client address; null: no limit",
    "connections_per_second": "new connections a second on this node; null: no limit",
    "max_sessions_per_authid": "sessions of one authid in one realm on this node; null: no limit",
}


def _limits() -> dict:
    d = c.NodeConfig()
    props = {k: js.integer(lo, hi, getattr(d, k), nullable=not required)
             for k, (lo, hi, required) in c.LIMIT_INTS.items()}
    props["sequential_request_ids"] = js.boolean(d.sequential_request_ids)
    for key, text in ADMISSION.items():
        props[key]["description"] = text
    return js.section(c.LIMIT_KEYS, props, "node-wide limits")


_REDIS_URL = js.string(None, "redis://, rediss://, unix:// or "
                       "redis+sentinel://[:password@]host:port[,host:port...]/MASTER_NAME[/db] URL")


def _cluster() -> dict:
    d = {f.name: f.default for f in fields(c.ClusterConfig)}
    return js.section(c.CLUSTER_KEYS, {
        "redis": {"oneOf": [_REDIS_URL, {"type": "array", "items": _REDIS_URL, "minItems": 1,
                                         "maxItems": c.MAX_SHARDS, "description": "one URL per shard, the "
                                         "home shard (every key) first"}], "default": "redis://127.0.0.1:6379/0"},
        "password": {"type": "string"},
        "sentinel_password": {"type": "string", "description": "the sentinels' own password (redis+sentinel://)"},
        "sentinel_tls": js.boolean(False, "TLS to the sentinels (redis+sentinel://)"),
        "node_id": js.string(description="1-64 letters, digits, '-', '_', '.'", maxLength=64,
                             pattern="^[A-Za-z0-9_.-]+$"),
        "heartbeat": js.number(0.05, d["heartbeat"], description="seconds"),
        "node_timeout": js.number(0.1, d["node_timeout"], description="seconds, at least twice heartbeat"),
        "activity_interval": js.number(0.01, d["activity_interval"], description="seconds"),
    }, "several nodes sharing one Redis")


def _http() -> dict:
    d = c.HttpConfig()
    return js.section(c.HTTP_KEYS, {
        **{k: js.boolean(getattr(d, k)) for k in c.HTTP_SWITCHES},
        "allow": {"type": "array", "maxItems": 1024, "items": {"type": "string"}, "default": d.allow,
                  "description": "addresses or networks that may see /metrics and the status page"},
        "token": {"type": ["string", "null"], "minLength": c.MIN_TOKEN, "maxLength": 1024, "pattern": "^[!-~]+$",
                  "description": "a bearer token that also opens /metrics and the status page"},
    }, "plain HTTP on WebSocket listeners: /health, /metrics, the status page")


def _pid_file() -> dict:
    return {"type": ["string", "null"], "minLength": 1, "default": c.PID_DEFAULT,
            "description": "for courtyard stop and status; relative to the config file's directory, "
                           "{data_dir} standing for admin.data_dir; null: none"}


def schema() -> dict:
    """The whole config's JSON Schema."""
    d = c.NodeConfig()
    admin_users = {"type": ["object", "null"], "additionalProperties": js.user(),
                   "description": "authid -> user (role admin, ticket or cryptosign)"}
    top = js.section(c.TOP_KEYS, {
        "version": {"const": c.CONFIG_VERSION, "default": c.CONFIG_VERSION, "description": "the config format"},
        "node": js.section(c.NODE_KEYS, {"name": js.string(d.name),
                                         "sweep_interval": js.number(0.01, d.sweep_interval, description="seconds"),
                                         "workers": js.integer(1, c.MAX_WORKERS, d.workers, description=(
                                             "router processes sharing the ports (SO_REUSEPORT); more than 1 "
                                             "needs cluster:")),
                                         "pid_file": _pid_file()}),
        "listeners": {"type": "array", "minItems": 1, "items": _listener()},
        "storage": js.section(c.STORAGE_KEYS, {"backend": {"enum": ["memory", "redis"], "default": "memory"}}),
        "limits": _limits(),
        "shutdown": js.section(c.SHUTDOWN_KEYS, {"grace_period": js.number(0, d.shutdown_grace,
                                                                           description="seconds")}),
        "realms": {"type": "array", "items": js.realm()},
        "admin": js.section(c.ADMIN_KEYS, {
            "realm": js.string(d.admin_realm.uri),
            "data_dir": {"type": ["string", "null"], "minLength": 1, "default": d.data_dir,
                         "description": "relative to the config file's directory; null: memory only"},
            "users": admin_users}),
        "cluster": _cluster(),
        "http": _http(),
    }, nullable=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Courtyard router config", **top}


def dumps() -> str:
    """The published text: stable key order, so the committed file can be compared byte for byte."""
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"
