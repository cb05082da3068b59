"""Running as a service (issue 24, point 2): `courtyard status` and `courtyard stop` find the node
from its config (pid file, /health), sd_notify tells a real NOTIFY_SOCKET once the node listens, the
systemd units pass `systemd-analyze verify`, and socket activation hands the router its port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet import threads

from tests.routerproc import RouterProcess, free_port
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred
ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"


def courtyard(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router.cli", *argv], capture_output=True, text=True, timeout=timeout)


@ensure
async def test_status_and_stop_find_the_node_from_its_config(tmp_path):
    router = RouterProcess(tmp_path, {"node": {"name": "edge-1"}}).start()
    config = str(router.config_path)
    pid_file = tmp_path / ".data" / "courtyard.pid"
    try:
        assert pid_file.read_text().strip() == str(router.proc.pid)  # {data_dir}/courtyard.pid, the default
        client = await connect(router.url)
        r = await threads.deferToThread(courtyard, "status", "-c", config)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
        assert lines["running"] == f"pid {router.proc.pid}" and lines["health"] == "ok"
        assert lines["node"] == "edge-1" and lines["sessions"] == "1" and "uptime" in lines, r.stdout
        r = await threads.deferToThread(courtyard, "status", "-c", config, "--json")
        info = json.loads(r.stdout)
        assert r.returncode == 0 and info["pid"] == router.proc.pid and info["sessions"] == 1, r.stdout
        # stop: SIGTERM, the client hears GOODBYE, the command returns once the node has exited
        r = await threads.deferToThread(courtyard, "stop", "-c", config)
        assert r.returncode == 0 and f"stopped (pid {router.proc.pid})" in r.stdout, r.stdout + r.stderr
        assert router.proc.poll() == 0, "stop returned before the node exited"
        details = await with_timeout(client.left)
        assert details.reason == "wamp.close.system_shutdown"
        assert not pid_file.exists() and "stopped" in router.log()
        r = await threads.deferToThread(courtyard, "status", "-c", config)
        assert r.returncode == 3 and r.stdout.strip() == "not running", r.stdout + r.stderr
        r = await threads.deferToThread(courtyard, "stop", "-c", config)
        assert r.returncode == 0 and r.stdout.strip() == "not running", r.stdout + r.stderr
    finally:
        router.stop()


def test_status_and_stop_with_a_stale_pid_file(tmp_path):
    """A node killed -9 leaves its pid file: status says so (1) and removes it; stop then has nothing to do."""
    router = RouterProcess(tmp_path, {}).start()
    pid_file = tmp_path / ".data" / "courtyard.pid"
    router.stop()  # SIGKILL: no clean-up
    assert pid_file.exists()
    r = courtyard("status", "-c", str(router.config_path))
    assert r.returncode == 1 and "is gone: removed" in r.stdout, r.stdout + r.stderr
    assert not pid_file.exists()
    pid_file.write_text(f"{router.proc.pid}\n")
    r = courtyard("stop", "-c", str(router.config_path))
    assert r.returncode == 0 and "stale pid file" in r.stdout, r.stdout + r.stderr
    (tmp_path / "none.yaml").write_text(yaml.safe_dump({"admin": {"data_dir": None}, "listeners": [
        {"port": free_port()}]}))
    r = courtyard("stop", "-c", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "no pid file" in r.stderr, r.stdout + r.stderr
    r = courtyard("status", "-c", str(tmp_path / "broken.yaml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def _notifications(sock: socket.socket, until: str, timeout: float = 15.0) -> list[str]:
    """Datagrams from the router until one holds `until`."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until!r} within {timeout}s; got {got}")


def test_sd_notify_ready_only_once_listening_then_reloading_and_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        router = RouterProcess(tmp_path, {"admin": {"data_dir": None}}, env={"NOTIFY_SOCKET": path}).start()
        try:
            ready = _notifications(sock, "READY=1")
            # at the moment READY=1 arrives the port already takes connections
            with socket.create_connection(("127.0.0.1", router.port), timeout=2):
                pass
            lines = ready[-1].splitlines()
            assert "READY=1" in lines and f"MAINPID={router.proc.pid}" in lines, ready
            assert len(ready) == 1, f"something before READY=1: {ready}"
            os.kill(router.proc.pid, signal.SIGHUP)
            got = _notifications(sock, "READY=1")
            assert got[0].startswith("RELOADING=1\nMONOTONIC_USEC="), got
            os.kill(router.proc.pid, signal.SIGTERM)
            assert "STOPPING=1" in _notifications(sock, "STOPPING=1")[-1]
            assert router.proc.wait(15) == 0
        finally:
            router.stop()
        # a node that cannot listen (its port taken) never says READY=1, and exits 2 like a config error
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            (tmp_path / "taken.yaml").write_text(yaml.safe_dump({"admin": {"data_dir": None},
                                                                 "listeners": [{"port": taken.getsockname()[1]}]}))
            r = subprocess.run([sys.executable, "-m", "router.cli", "start", "-c", str(tmp_path / "taken.yaml")],
                               capture_output=True, text=True, timeout=60, env={**os.environ, "NOTIFY_SOCKET": path})
        assert r.returncode == 2, r.stdout + r.stderr
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(4096)


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return tool


def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path):
    tool = _analyze()
    exe = shutil.which("courtyard") or str(Path(sys.executable).parent / "courtyard")
    for name in ("courtyard.service", "courtyard.socket"):
        text = (UNITS / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/courtyard", exe))
    service = (UNITS / "courtyard.service").read_text()
    for line in ("Type=notify", "ExecStartPre=/usr/local/bin/courtyard check-config -c ${COURTYARD_CONFIG}",
                 "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "RestartPreventExitStatus=2"):
        assert line in service.splitlines(), line
    r = subprocess.run([tool, "verify", str(tmp_path / "courtyard.service"), str(tmp_path / "courtyard.socket")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr  # a typo is only a warning
    broken = tmp_path / "broken.service"
    broken.write_text((tmp_path / "courtyard.service").read_text().replace("Type=notify", "Type=notifyy"))
    r = subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "notifyy" in r.stdout + r.stderr  # the check can fail


@ensure
async def test_socket_activation_with_systemd_socket_activate(tmp_path):
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed (apt-get install systemd)")
    port = free_port()
    config = tmp_path / "courtyard.yaml"
    config.write_text(yaml.safe_dump({"listeners": [{"endpoint": "systemd:domain=INET:index=0"}],
                                      "admin": {"data_dir": None}}))
    log = open(tmp_path / "out.log", "w")
    # --fdname: systemd itself always names the sockets (LISTEN_FDNAMES), which Twisted requires
    proc = subprocess.Popen([tool, "--fdname=courtyard", "-l", f"127.0.0.1:{port}", sys.executable, "-m",
                             "router.cli", "start", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while "Listening on" not in (tmp_path / "out.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        client = await connect(f"ws://127.0.0.1:{port}/ws")  # the first connection starts the router
        await client.register(lambda: "ok", "com.example.alive")
        assert await client.call("com.example.alive") == "ok"
        assert proc.poll() is None
        text = (tmp_path / "out.log").read_text()
        assert f"listening for WAMP over WebSocket on ws://127.0.0.1:{port}/ws" in text, text
        client.leave()
        proc.send_signal(signal.SIGTERM)
        assert await threads.deferToThread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


@ensure
async def test_reload_checks_the_config_then_signals_the_node(tmp_path):
    router = RouterProcess(tmp_path, {}).start()
    config = str(router.config_path)
    try:
        good = router.config_path.read_text()
        router.config_path.write_text(good + "limits: {max_sessions: -1}\n")
        r = await threads.deferToThread(courtyard, "reload", "-c", config)
        assert r.returncode == 2 and "limits.max_sessions" in r.stderr, r.stdout + r.stderr
        assert "reloaded" not in router.log() and "reload refused" not in router.log()  # not even asked
        router.config_path.write_text(good)
        r = await threads.deferToThread(courtyard, "reload", "-c", config)
        assert r.returncode == 0 and f"pid {router.proc.pid}" in r.stdout, r.stdout + r.stderr
        for _ in range(100):
            if "reloaded" in router.log():
                break
            await threads.deferToThread(time.sleep, 0.05)
        assert "reloaded" in router.log() and router.proc.poll() is None
    finally:
        router.stop()
    r = courtyard("reload", "-c", config)
    assert r.returncode == 3 and "not running" in r.stderr


def test_status_of_a_cluster_node_lists_its_peers_from_the_admin_realm(tmp_path, redis_server):
    from tests.helpers.cluster import ADMIN_TICKET, node_process

    a = node_process(tmp_path, "a", redis_server.url).start()
    b = node_process(tmp_path, "b", redis_server.url).start()
    try:
        for _ in range(100):  # b's heartbeat reaches Redis
            r = courtyard("status", "-c", str(a.config_path), "--ticket", ADMIN_TICKET)
            if "cluster: 2 node(s)" in r.stdout:
                break
            time.sleep(0.1)
        lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
        assert r.returncode == 0 and lines["node"] == "a" and lines["node id"] == "a", r.stdout + r.stderr
        assert lines["cluster"].startswith("2 node(s): ") and "b (" in lines["cluster"], r.stdout
        r = courtyard("status", "-c", str(a.config_path))  # no credential: said, not an error
        assert r.returncode == 0 and "cluster: give --ticket or --key" in r.stdout, r.stdout + r.stderr
    finally:
        a.stop()
        b.stop()


def test_status_asks_a_tls_only_node_over_https(tmp_path):
    from tests.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    router = RouterProcess(tmp_path, {"listeners": [{"tls": {"certificate": str(pki.certificate),
                                                             "key": str(pki.key)}}]}).start()
    try:
        r = courtyard("status", "-c", str(router.config_path))
        assert r.returncode == 0 and "health: ok" in r.stdout, r.stdout + r.stderr
    finally:
        router.stop()
