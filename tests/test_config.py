"""Config validation: defaults, and errors that name the key path."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from router.config import ConfigError, load, parse

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_default_matches_the_shipped_file():
    shipped = load(ROOT / "config" / "router.yaml")
    assert shipped.data_dir == str(ROOT / "config" / ".data")  # relative to the file's directory
    assert load(None) == replace(shipped, data_dir=".data", pid_file=".data/courtyard.pid")
    cfg = load(None)
    lc = cfg.listeners[0]
    assert (lc.host, lc.port, lc.path) == ("127.0.0.1", 8080, "/ws")
    assert [r.uri for r in cfg.realms] == ["realm1"] and cfg.realms[0].anonymous
    assert cfg.storage == {"backend": "memory"}


# (config, the key path of its error); the shape errors among them are the schema test's too
BAD = [
    ({"listeners": [{"port": "eighty"}]}, "listeners[0].port"),
    ({"listeners": [{"port": 70000}]}, "listeners[0].port"),
    ({"listeners": [{"serializers": ["xml"]}]}, "listeners[0].serializers"),
    ({"listeners": [{"path": "ws"}]}, "listeners[0].path"),
    ({"listeners": [{}, {"colour": 1}]}, "listeners[1].colour"),
    ({"realms": [{"uri": "a"}, {"uri": "a"}]}, "realms[1].uri"),
    ({"realms": [{"uri": "a", "limits": {"rate": {"limit": 0, "duration": 1}}}]}, "realms[0].limits.rate.limit"),
    ({"realms": [{"uri": "a", "roles": {"x": {"limits": {"expires_in": -1}}}}]}, "realms[0].roles.x.limits.expires_in"),
    ({"realms": [{"uri": "a", "roles": {"x": {"permissions": [{"uri": "a", "allow": ["eat"]}]}}}]},
     "realms[0].roles.x.permissions[0].allow"),
    ({"realms": [{"uri": "a", "roles": {"x": {"permissions": [{"uri": "a", "match": "regex"}]}}}]},
     "realms[0].roles.x.permissions[0].match"),
    ({"realms": [{"uri": "a", "users": {"bob": {"role": "x", "ticket": "plain"}}}]}, "realms[0].users.bob.ticket"),
    ({"realms": [{"uri": "a", "users": {"bob": {"role": "x", "cryptosign": ["zz"]}}}]},
     "realms[0].users.bob.cryptosign"),
    ({"realms": [{"uri": "a", "auth": {"ticket": "yes"}}]}, "realms[0].auth.ticket"),
    ({"storage": {"backend": "etcd"}}, "storage.backend"),
    ({"listeners": [{"auto_ping_interval": 0.5}]}, "listeners[0].auto_ping_interval"),
    ({"listeners": [{"hello_timeout": 0}]}, "listeners[0].hello_timeout"),
    ({"limits": {"admin_reserve": None}}, "limits.admin_reserve"),
    ({"limits": {"max_pending_connections": 0}}, "limits.max_pending_connections"),
    ({"limits": {"max_retained_bytes": None}}, "limits.max_retained_bytes"),
    ({"bogus": 1}, "bogus"),
    ([1, 2], "(top level)"),
    ({"version": 2}, "version"),
    ({"version": "1"}, "version"),
]


@pytest.mark.parametrize("raw,path", BAD)
def test_errors_name_the_key_path(raw, path):
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert e.value.path == path
    assert str(e.value).startswith(path + ": ")


def test_cli_check_config_fails_loudly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - port: -1\n")
    r = subprocess.run([sys.executable, "-m", "router.cli", "check-config", "-c", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "listeners[0].port" in r.stderr
    good = subprocess.run([sys.executable, "-m", "router.cli", "check-config", "-c", str(ROOT / "config/router.yaml")],
                          capture_output=True, text=True, timeout=30)
    assert good.returncode == 0 and "realm1" in good.stdout


def test_cli_start_with_invalid_config_exits_non_zero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("realms: {uri: x}\n")
    r = subprocess.run([sys.executable, "-m", "router.cli", "start", "-c", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "realms" in r.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    cfg = load(path)
    assert cfg.realms
