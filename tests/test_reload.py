"""SIGHUP reloads a running `courtyard start` (issue 24, point 1): a new realm is served while the
sessions opened before stay up, a renewed certificate is what the next client sees, a broken config
is refused (one line per error) while the node serves on, and a rotated log file is reopened."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time

import pytest_twisted
import yaml
from autobahn.twisted.util import sleep
from twisted.internet import threads
from twisted.internet.ssl import Certificate, optionsForClientTLS

from tests.pki import make_pki
from tests.routerproc import RouterProcess
from tests.wampclient import Aborted, connect, with_timeout

ensure = pytest_twisted.ensureDeferred

OPEN_ROLE = {"anonymous": {"permissions": [{"uri": "", "match": "prefix",
                                              "allow": ["call", "register", "publish", "subscribe"]}]}}


def _realm(uri: str) -> dict:
    return {"uri": uri, "auth": {"anonymous": {"enabled": True, "authrole": "anonymous"}}, "roles": OPEN_ROLE}


def _config(router: RouterProcess, **changes) -> dict:
    config = yaml.safe_load(router.config_path.read_text())
    config.update(changes)
    return config


def _write(router: RouterProcess, config: dict) -> None:
    router.config_path.write_text(yaml.safe_dump(config))


async def _logged(router: RouterProcess, text: str, start: int = 0, timeout: float = 10.0) -> str:
    """The log past offset `start` once it holds `text` (the router writes it asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = router.log()[start:]
        if text in log:
            return log
        assert router.proc.poll() is None, f"the router exited ({router.proc.returncode}):\n{router.log()}"
        await sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {timeout}s:\n{router.log()[start:]}")


_procedures = iter(range(1_000_000))


async def _works(client) -> None:
    """The session still routes: a call through itself."""
    uri = f"com.example.echo{next(_procedures)}"
    await client.register(lambda x: x, uri)
    assert await client.call(uri, 7) == 7


def _reload(router: RouterProcess) -> int:
    """SIGHUP; the log offset before it."""
    offset = len(router.log())
    router.signal(signal.SIGHUP)
    return offset


@ensure
async def test_sighup_serves_a_new_realm_and_keeps_the_sessions_open(tmp_path):
    router = RouterProcess(tmp_path, {"realms": [_realm("realm1")], "admin": {"data_dir": None}}).start()
    try:
        before = await connect(router.url)
        _write(router, _config(router, realms=[_realm("realm1"), _realm("realm2")]))
        log = await _logged(router, "reloaded", _reload(router))
        assert "added: realm2" in log, log
        after = await connect(router.url, realm="realm2")
        await _works(after)
        await _works(before)  # the session opened before the reload is the same, and routes
        assert router.proc.poll() is None
        # a realm taken out of the file is deleted: its sessions get GOODBYE with the reason
        _write(router, _config(router, realms=[_realm("realm1")]))
        await _logged(router, "removed: realm2", _reload(router))
        details = await with_timeout(after.left)
        assert details.reason == "courtyard.close.realm_deleted"
        await _works(before)
        try:
            await connect(router.url, realm="realm2")
            raise AssertionError("realm2 still served")
        except Aborted as e:
            assert e.reason == "wamp.error.no_such_realm"
        before.leave()
    finally:
        router.stop()


@ensure
async def test_sighup_applies_a_removed_role_to_open_sessions(tmp_path):
    """A reload that takes a role away closes its sessions; the others run under their new permissions."""
    realm = {"uri": "realm1", "auth": {"anonymous": {"enabled": True, "authrole": "guest"}},
             "roles": {"guest": OPEN_ROLE["anonymous"]}}
    router = RouterProcess(tmp_path, {"realms": [realm], "admin": {"data_dir": None}}).start()
    try:
        guest = await connect(router.url)
        await _works(guest)
        changed = {**realm, "auth": {"anonymous": {"enabled": True, "authrole": "visitor"}},
                   "roles": {"visitor": OPEN_ROLE["anonymous"]}}
        _write(router, _config(router, realms=[changed]))
        await _logged(router, "changed: realm1", _reload(router))
        details = await with_timeout(guest.left)
        assert details.reason == "courtyard.close.role_removed"
        visitor = await connect(router.url)
        assert visitor.welcome.authrole == "visitor"
        visitor.leave()
    finally:
        router.stop()


def _served_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port), timeout=5)


def _same_pem(a: str, b: bytes) -> bool:
    return ssl.PEM_cert_to_DER_cert(a) == ssl.PEM_cert_to_DER_cert(b.decode())


@ensure
async def test_sighup_reloads_a_renewed_certificate(tmp_path):
    old, new = make_pki(tmp_path / "old", "old"), make_pki(tmp_path / "new", "new")
    live = tmp_path / "live"
    live.mkdir()
    (live / "cert.pem").write_bytes(old.certificate.read_bytes())
    (live / "key.pem").write_bytes(old.key.read_bytes())
    tls = {"certificate": str(live / "cert.pem"), "key": str(live / "key.pem")}
    router = RouterProcess(tmp_path, {"listeners": [{"tls": tls}], "admin": {"data_dir": None}}).start()
    url = f"wss://localhost:{router.port}/ws"
    try:
        trusting_old = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(old.ca_pem))
        before = await connect(url, tls=trusting_old)
        assert _same_pem(await threads.deferToThread(_served_certificate, router.port), old.certificate.read_bytes())
        # certbot's renewal: the same paths, new files
        (live / "cert.pem").write_bytes(new.certificate.read_bytes())
        (live / "key.pem").write_bytes(new.key.read_bytes())
        log = await _logged(router, "reloaded", _reload(router))
        assert "1 TLS listener(s) with their certificates read again" in log, log
        served = await threads.deferToThread(_served_certificate, router.port)
        assert _same_pem(served, new.certificate.read_bytes())
        trusting_new = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(new.ca_pem))
        after = await connect(url, tls=trusting_new)
        await _works(after)
        await _works(before)  # the connection made with the old certificate stays up
        after.leave()
        before.leave()
    finally:
        router.stop()


@ensure
async def test_sighup_refuses_a_broken_config_and_serves_on(tmp_path):
    router = RouterProcess(tmp_path, {"admin": {"data_dir": None}}).start()
    try:
        before = await connect(router.url)
        good = _config(router)
        broken = {**good, "realms": [_realm("realm1"), {"uri": "realm2", "auth": {"ticket": "yes"}}],
                  "limits": {"max_sessions": -1}}
        _write(router, broken)
        log = await _logged(router, "still running on the previous config", _reload(router))
        refused = [line for line in log.splitlines() if "reload refused" in line]
        assert len(refused) == 3, log  # one per error, then the summary
        assert any("limits.max_sessions" in line for line in refused) and \
            any("realms[1].auth.ticket" in line for line in refused), log
        assert "reloaded" not in log
        await _works(before)
        fresh = await connect(router.url)
        await _works(fresh)
        try:
            await connect(router.url, realm="realm2")
            raise AssertionError("realm2 of the refused config is served")
        except Aborted as e:
            assert e.reason == "wamp.error.no_such_realm"
        # what takes a restart is said, and the node keeps its listener
        _write(router, {**good, "listeners": [{**good["listeners"][0], "port": router.port + 1}]})
        log = await _logged(router, "reloaded", _reload(router))
        assert "listeners[0] changed in the file: takes effect only after a restart" in log, log
        assert "changed:" not in log and "added:" not in log, log  # the realms are as they were
        await _works(await connect(router.url))
        fresh.leave()
        before.leave()
    finally:
        router.stop()


@ensure
async def test_sighup_reopens_a_rotated_log_file(tmp_path):
    log_file = tmp_path / "courtyard.log"
    router = RouterProcess(tmp_path, {"admin": {"data_dir": None}}, log_file=log_file).start()
    try:
        rotated = tmp_path / "courtyard.log.1"
        log_file.rename(rotated)  # logrotate's move, then its postrotate `kill -HUP`
        router.signal(signal.SIGHUP)
        for _ in range(200):
            if log_file.exists() and "reloaded" in log_file.read_text():
                break
            assert router.proc.poll() is None, router.stdout_path.read_text()
            await sleep(0.05)
        assert f"log file {log_file} reopened" in log_file.read_text()
        assert "started in" in rotated.read_text() and "reopened" not in rotated.read_text()
        client = await connect(router.url)  # what happens next goes to the new file
        client.leave()
        await with_timeout(client.left)
        await sleep(0.2)
        assert "realm1" in log_file.read_text() and "joined" not in rotated.read_text()
    finally:
        router.stop()


@ensure
async def test_sighup_on_a_cluster_node_reads_its_realms_again(tmp_path, redis_server):
    """In a cluster the YAML is each node's base layer under the cluster's realm store: a realm added
    to the file is served after SIGHUP; the cluster itself takes a restart, which is said."""
    router = RouterProcess(tmp_path, {"realms": [_realm("realm1")], "admin": {"data_dir": None},
                                      "cluster": {"redis": redis_server.url, "node_id": "a"}}).start()
    try:
        before = await connect(router.url)
        config = _config(router, realms=[_realm("realm1"), _realm("realm2")])
        config["cluster"] = {**config["cluster"], "heartbeat": 0.5, "node_timeout": 2.0}
        _write(router, config)
        log = await _logged(router, "reloaded", _reload(router))
        assert "cluster changed in the file: takes effect only after a restart" in log, log
        for _ in range(100):  # the store is read again from Redis: a moment
            try:
                after = await connect(router.url, realm="realm2")
                break
            except Aborted:
                await sleep(0.05)
        await _works(after)
        await _works(before)
    finally:
        router.stop()


def test_sighup_to_a_workers_supervisor_reloads_every_worker(tmp_path, redis_server):
    """`--workers 2`: the supervisor passes SIGHUP on, each worker reloads; the supervisor writes the pid file."""
    import subprocess
    import sys

    from tests.helpers.cluster import cluster_config
    from tests.helpers.poll import wait
    from tests.routerproc import free_port

    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(cluster_config(redis_server.url, "n", listeners=[{"port": free_port()}],
                                                    admin={"data_dir": str(tmp_path / "data")})))
    log = tmp_path / "router.log"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "router.cli", "start", "-c", str(config), "--workers", "2"],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        wait(lambda: "all 2 workers serving" in log.read_text(), 30, "both workers")
        notify.settimeout(5)
        ready = notify.recv(4096).decode().splitlines()  # the supervisor's, once both serve: the service's
        assert "READY=1" in ready and f"MAINPID={proc.pid}" in ready, ready
        pid_file = tmp_path / "data" / "courtyard.pid"
        wait(pid_file.exists, 5, "the pid file")
        assert pid_file.read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGHUP)
        wait(lambda: log.read_text().count("reloaded") == 2, 15, "both workers reloaded")
        assert proc.poll() is None and "SIGHUP: each worker reloads the config" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not pid_file.exists()
        notify.settimeout(0.5)
        rest = []
        while True:
            try:
                rest.append(notify.recv(4096).decode())
            except TimeoutError:
                break
        assert not any("READY=1" in m for m in rest), rest  # no worker says it is the service
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@ensure
async def test_sighup_keeps_what_the_admin_api_changed(tmp_path):
    """A realm created through the admin realm is in admin.data_dir, not the file: a reload keeps it,
    as a restart would (the admin changes are laid over the file, as at start)."""
    import subprocess
    import sys

    from realms.secrets import hash_secret

    admin = {"users": {"root": {"ticket": hash_secret("pw", iterations=1000)}}}
    router = RouterProcess(tmp_path, {"admin": admin}).start()
    try:
        r = await threads.deferToThread(subprocess.run, [
            sys.executable, "-m", "router.cli", "admin", "--url", router.url, "--authid", "root", "--ticket", "pw",
            "realms", "create", "shop"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        shopper = await connect(router.url, realm="shop")
        log = await _logged(router, "reloaded", _reload(router))
        assert "removed" not in log and "shop" in log, log
        await _works(shopper)
        shopper.leave()
    finally:
        router.stop()


@ensure
async def test_sigusr1_logs_the_state_and_the_node_serves_on(tmp_path):
    router = RouterProcess(tmp_path, {"admin": {"data_dir": None}}).start()
    try:
        client = await connect(router.url)
        offset = len(router.log())
        router.signal(signal.SIGUSR1)
        log = await _logged(router, "state: ", offset)
        assert "1 session(s)" in log and "realm1 1" in log and "0 reload(s) applied" in log, log
        await _works(client)
        client.leave()
    finally:
        router.stop()

