"""`courtyard init`, the config it writes, where `admin.data_dir` lives (next to the config file, not
the working directory) and when it is made (at the first admin change, not at start)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest_twisted
import yaml
from twisted.internet import threads

from realms.secrets import hash_secret
from router.starter import shipped
from tests.routerproc import free_port, stop_process
from tests.wampclient import answer_ticket, connect, with_timeout

ensure = pytest_twisted.ensureDeferred
ROOT = Path(__file__).resolve().parent.parent


def courtyard(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router.cli", *argv], capture_output=True, text=True, timeout=30,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


class Started:
    """`courtyard start ARGS` run in `cwd`, once it says it started; stop() kills it by its PID."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.out = cwd / "start.out"
        self._log = open(self.out, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "router.cli", "start", *args], cwd=cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 15
        while "started in" not in self.out.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.out.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc, self._log)


def _on_port(config: Path, port: int) -> None:
    """The starter config, on a free port instead of 8080 (the tests must not clash)."""
    text = config.read_text()
    assert "    port: 8080\n" in text
    config.write_text(text.replace("    port: 8080\n", f"    port: {port}\n"))


def test_init_writes_the_starter_files_and_never_overwrites(tmp_path):
    r = courtyard("init", "node", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    node = tmp_path / "node"
    assert (node / "courtyard.yaml").read_text() == (ROOT / "config" / "router.yaml").read_text()
    assert (node / "courtyard.schema.json").read_text() == (ROOT / "config" / "courtyard.schema.json").read_text()
    assert (node / "examples" / "auth.yaml").read_text() == shipped("examples/auth.yaml")
    assert stat.S_IMODE((node / ".data").stat().st_mode) == 0o700
    assert "courtyard start -c node/courtyard.yaml" in r.stdout
    (node / "courtyard.yaml").write_text("# mine\n")
    again = courtyard("init", "node", cwd=tmp_path)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == "courtyard init: node/courtyard.yaml exists: not overwritten (move it aside to start " \
                           "again)\n"
    assert (node / "courtyard.yaml").read_text() == "# mine\n"
    blocked = tmp_path / "file"
    blocked.write_text("")
    r = courtyard("init", "file/sub", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_the_starter_config_lists_every_section_and_passes_check_config(tmp_path):
    assert courtyard("init", cwd=tmp_path).returncode == 0
    text = (tmp_path / "courtyard.yaml").read_text()
    raw = yaml.safe_load(text)
    assert set(raw) == {"version", "node", "listeners", "storage", "limits", "shutdown", "http", "admin", "realms"}
    assert "# cluster:" in text  # off by default: shown commented out
    r = courtyard("check-config", cwd=tmp_path)  # no -c: ./courtyard.yaml
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("config OK (courtyard.yaml)"), r.stdout


@ensure
async def test_init_then_start_here_serves_a_client(tmp_path):
    assert courtyard("init", cwd=tmp_path).returncode == 0
    port = free_port()
    _on_port(tmp_path / "courtyard.yaml", port)
    router = await threads.deferToThread(Started, tmp_path)  # no -c: the courtyard.yaml init wrote
    try:
        assert "config: courtyard.yaml" in router.out.read_text()
        client = await connect(f"ws://127.0.0.1:{port}/ws")
        await client.register(lambda a, b: a + b, "com.example.add")
        assert await client.call("com.example.add", 2, 3) == 5
        client.leave()
        await with_timeout(client.left)
    finally:
        router.stop()
    assert [p.name for p in (tmp_path / ".data").iterdir()] in ([], ["courtyard.pid"])  # no admin change: no database


@ensure
async def test_data_dir_is_next_to_the_config_and_made_at_the_first_change(tmp_path):
    conf_dir, elsewhere = tmp_path / "etc", tmp_path / "run"
    conf_dir.mkdir()
    elsewhere.mkdir()
    port = free_port()
    (conf_dir / "node.yaml").write_text(yaml.safe_dump({
        "listeners": [{"port": port}],
        "admin": {"data_dir": "state", "users": {"admin": {"ticket": hash_secret("pw", iterations=1000)}}}}))
    router = await threads.deferToThread(Started, elsewhere, "-c", str(conf_dir / "node.yaml"))
    try:
        assert not (elsewhere / "state").exists()  # nothing to keep yet: no database, only the pid file
        assert [p.name for p in (conf_dir / "state").iterdir()] == ["courtyard.pid"]
        admin = await connect(f"ws://127.0.0.1:{port}/ws", realm="courtyard.admin", authmethods=["ticket"],
                              authid="admin", on_challenge=answer_ticket("pw"))
        await admin.call("courtyard.realm.create", "shop")
        admin.leave()
        await with_timeout(admin.left)
    finally:
        router.stop()
    db = conf_dir / "state" / "courtyard.db"
    assert db.is_file() and not (elsewhere / "state").exists()
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700 and stat.S_IMODE(db.stat().st_mode) == 0o600
    # started again from yet another directory, the node finds the realm it kept
    r = courtyard("check-config", "-c", str(conf_dir / "node.yaml"), cwd=tmp_path)
    assert r.returncode == 0 and "realm shop: defined here" in r.stdout, r.stdout + r.stderr
