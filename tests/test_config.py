"""Config validation: defaults, and errors that name the key path."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from router.config import ConfigError, load, parse
from tests.helpers.configs import BAD, ROOT


def test_embedded_default_matches_the_shipped_file():
    shipped = load(ROOT / "config" / "router.yaml")
    assert shipped.data_dir == str(ROOT / "config" / ".data")  # relative to the file's directory
    assert load(None) == replace(shipped, data_dir=".data", pid_file=".data/courtyard.pid")
    cfg = load(None)
    lc = cfg.listeners[0]
    assert (lc.host, lc.port, lc.path) == ("127.0.0.1", 8080, "/ws")
    assert [r.uri for r in cfg.realms] == ["realm1"] and cfg.realms[0].anonymous
    assert cfg.storage == {"backend": "memory"}




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
