"""The published JSON Schema of the config: generated from the parser's own definitions, equal to the
committed file, and in agreement with the parser on the shipped configs and on broken ones."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from router.config import ConfigError, parse
from tests.helpers.configs import BAD, ROOT

PUBLISHED = ROOT / "config" / "courtyard.schema.json"
SHIPPED = [ROOT / "config" / "router.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]
SEMANTIC = {"realms[1].uri"}  # what a schema cannot say (the parser checks it): two realms with one URI


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(PUBLISHED.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_published_schema_is_what_courtyard_schema_prints():
    r = subprocess.run([sys.executable, "-m", "router.cli", "schema"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == PUBLISHED.read_text(), "config/courtyard.schema.json is stale: courtyard schema > it"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_configs_validate(path):
    raw = yaml.safe_load(path.read_text())
    assert [e.message for e in _validator().iter_errors(raw)] == []
    parse(raw)  # and the parser takes them


@pytest.mark.parametrize("raw,path", [(raw, path) for raw, path in BAD if path not in SEMANTIC],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_the_schema_refuses_what_the_parser_refuses(raw, path):
    with pytest.raises(ConfigError):
        parse(raw)
    assert list(_validator().iter_errors(raw)), f"the schema takes a config the parser refuses at {path}"


def test_version_1_is_taken_and_written_in_the_shipped_config():
    assert parse({"version": 1}) == parse({})
    assert yaml.safe_load((ROOT / "config" / "router.yaml").read_text())["version"] == 1
    with pytest.raises(ConfigError) as e:
        parse({"version": 2})
    assert str(e.value) == "version: must be 1 (the config format this Courtyard reads), got 2"


def test_every_key_the_parser_takes_is_in_the_schema():
    """A config using every key once (with its default): the parser and the schema both take it."""
    raw = {
        "version": 1, "node": {"name": "n", "sweep_interval": 1.0},
        "listeners": [{"type": "websocket", "host": "127.0.0.1", "port": 0, "path": "/ws",
                       "serializers": ["json"], "max_message_size": 65536, "max_depth": 64,
                       "max_outgoing_buffer": 4096, "slow_consumer": "drop", "slow_consumer_timeout": 30,
                       "hello_timeout": 10, "auto_ping_interval": 0, "auto_ping_timeout": 0,
                       "trusted_proxies": ["10.0.0.0/8"], "tls": None, "endpoint": None}],
        "storage": {"backend": "memory"},
        "limits": {"max_sessions": 10, "admin_reserve": 1, "max_pending_connections": 5, "max_pending_calls": None,
                   "max_retained_bytes": 0, "max_uri_length": 64, "max_subscriptions_per_session": 1,
                   "max_registrations_per_session": 1, "sequential_request_ids": True},
        "shutdown": {"grace_period": 1},
        "admin": {"realm": "adm", "data_dir": None, "users": {}},
        "realms": [{"uri": "r", "auth": {
            "anonymous": {"enabled": True, "authrole": "a"}, "ticket": True, "wampcra": True, "cryptosign": True,
            "cookie": {"max_age": 60}, "throttle": {"max_failures": 1, "max_failures_per_address": 2, "window": 1,
                                                    "block_for": 1, "max_in_flight_per_address": 1,
                                                    "max_in_flight": 1}},
            "users": {"u": {"role": "a", "ticket": "pbkdf2-sha256$1$a$b", "wampcra": {"secret": "s"},
                            "cryptosign": ["ab" * 32]}},
            "roles": {"a": {"permissions": [{"uri": "", "match": "prefix", "allow": ["call"],
                                             "disclose": ["caller"]}],
                            "limits": {"rate": {"limit": 1, "duration": 1}, "quota": {"limit": 1, "duration": 1},
                                       "expires_in": 5, "idle_timeout": 5}}},
            "limits": {}}],
    }
    parse(raw)
    assert [e.message for e in _validator().iter_errors(raw)] == []
