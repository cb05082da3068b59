"""The rough edges an operator hit in the trial of issue 24 (point 5), each shown fixed: the cluster
from the starter config in one edit, what check-config finds, TLS key files, realm auth defaults,
JSON log lines, the admin CLI's output and /health's node id."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from cryptography.hazmat.primitives import serialization
from twisted.internet import threads

from realms.schema import ConfigError
from realms.secrets import hash_secret
from router.config import load, parse
from router.starter import shipped
from tests.pki import make_pki
from tests.routerproc import RouterProcess, free_port
from tests.wampclient import Aborted, answer_ticket, connect, with_timeout

ensure = pytest_twisted.ensureDeferred
ROOT = Path(__file__).resolve().parent.parent


def courtyard(*argv: str, code: str | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "router.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


# -- the cluster from the starter config -----------------------------------------------------------
def test_the_starter_config_becomes_a_cluster_by_uncommenting_cluster_alone(tmp_path):
    text = shipped("router.yaml")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# cluster: "))
    for i in range(start, start + 5):
        lines[i] = lines[i][2:]  # what an operator does: remove "# "
    (tmp_path / "courtyard.yaml").write_text("\n".join(lines) + "\n")
    cfg = load(tmp_path / "courtyard.yaml")
    assert cfg.cluster is not None and cfg.storage == {"backend": "redis"}


def test_storage_backend_errors_point_the_right_way():
    with pytest.raises(ConfigError) as e:
        parse({"storage": {"backend": "memory"}, "cluster": {"redis": "redis://127.0.0.1:6379/0"}})
    assert "set it to redis, or leave storage.backend out" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse({"storage": {"backend": "redis"}})
    assert "redis needs a cluster: section" in str(e.value)


# -- check-config and start ------------------------------------------------------------------------
def test_check_config_says_the_redis_client_is_missing(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"cluster": {"redis": "redis://127.0.0.1:1/0"}}))
    code = ("import sys; sys.modules['txredisapi'] = None; from router.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = courtyard("check-config", "-c", str(tmp_path / "c.yaml"), code=code)
    assert r.returncode == 2 and "cluster: needs the Redis client: pip install 'courtyard[redis]'" in r.stderr, \
        r.stdout + r.stderr


def test_a_port_in_use_is_found_by_check_config_and_start_exits_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({"listeners": [{"port": port}], "admin": {"data_dir": None}}))
        r = courtyard("check-config", "-c", str(tmp_path / "c.yaml"))
        assert f"warning: listeners[0].port: 127.0.0.1:{port} is in use" in r.stderr, r.stderr
        r = courtyard("start", "-c", str(tmp_path / "c.yaml"))
        assert r.returncode == 2 and "cannot start" in r.stderr, r.stdout + r.stderr  # as a config error does


def test_check_config_notes_a_port_held_by_its_own_running_node(tmp_path):
    router = RouterProcess(tmp_path, {}).start()
    try:
        r = courtyard("check-config", "-c", str(router.config_path))
        assert r.returncode == 0 and "in use by this config's running node" in r.stdout, r.stdout + r.stderr
        assert "warning" not in r.stderr
    finally:
        router.stop()


# -- TLS key files ---------------------------------------------------------------------------------
def _tls_error(tls: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse({"listeners": [{"tls": tls}]})
    return str(e.value)


def test_tls_key_files_say_what_is_wrong_and_encrypted_keys_work(tmp_path):
    pki = make_pki(tmp_path)
    cert = str(pki.certificate)
    assert "cannot read" in _tls_error({"certificate": cert, "key": str(tmp_path / "missing.pem")})
    assert "No such file or directory" in _tls_error({"certificate": cert, "key": str(tmp_path / "missing.pem")})
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"open sesame")))
    assert "is encrypted: give its password in a file, tls.key_password_file" in \
        _tls_error({"certificate": cert, "key": str(encrypted)})
    password = tmp_path / "password"
    password.write_text("wrong\n")
    assert "does not decrypt" in _tls_error({"certificate": cert, "key": str(encrypted),
                                             "key_password_file": str(password)})
    password.write_text("open sesame\n")
    parse({"listeners": [{"tls": {"certificate": cert, "key": str(encrypted), "key_password_file": str(password)}}]})
    assert "is not encrypted: remove tls.key_password_file" in \
        _tls_error({"certificate": cert, "key": str(pki.key), "key_password_file": str(password)})
    assert "# tls: {certificate: cert.pem, key: key.pem}   # wss:// (paths relative to this file's directory)" in \
        shipped("router.yaml")


@ensure
async def test_ws_to_a_tls_port_says_use_wss(tmp_path):
    pki = make_pki(tmp_path / "pki")
    admin = {"users": {"root": {"ticket": hash_secret("pw", iterations=1000)}}, "data_dir": None}
    router = RouterProcess(tmp_path, {"listeners": [{"tls": {"certificate": str(pki.certificate),
                                                             "key": str(pki.key)}}], "admin": admin}).start()
    try:
        r = await threads.deferToThread(courtyard, "admin", "--url", router.url, "--authid", "root", "--ticket",
                                        "pw", "realms", "list")
        assert r.returncode == 1 and "is it a TLS listener? then use wss://" in r.stderr, r.stderr
        assert "plain HTTP or ws:// to a TLS listener" in router.log(), router.log()
    finally:
        router.stop()


# -- realms ----------------------------------------------------------------------------------------
def test_anonymous_without_roles_is_warned_about(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"realms": [{"uri": "open"}], "admin": {"data_dir": None},
                                                     "listeners": [{"port": free_port()}]}))
    r = courtyard("check-config", "-c", str(tmp_path / "c.yaml"))
    assert r.returncode == 0 and "realms[0]: anonymous clients and no roles: anyone who connects may do " \
                                 "everything" in r.stderr, r.stderr


def test_naming_an_auth_method_turns_anonymous_off_unless_given():
    roles = {"user": {"permissions": [{"uri": "", "match": "prefix", "allow": ["call"]}]}}
    realm = parse({"realms": [{"uri": "shop", "auth": {"ticket": True}, "roles": roles}]}).realms[0]
    assert realm.auth.ticket and not realm.auth.anonymous  # on main: refused (anonymous has no role)
    realm = parse({"realms": [{"uri": "shop", "auth": {"ticket": True, "anonymous": True},
                               "roles": {**roles, "anonymous": roles["user"]}}]}).realms[0]
    assert realm.auth.anonymous
    assert parse({"realms": [{"uri": "r"}]}).realms[0].auth.anonymous  # no method named: anonymous, as before


# -- JSON logs -------------------------------------------------------------------------------------
@ensure
async def test_json_log_lines_carry_the_node_id_and_one_format_of_each_field(tmp_path):
    realm = {"uri": "realm1", "auth": {"ticket": True},
             "users": {"bob": {"ticket": hash_secret("pw", iterations=1000), "role": "user"}},
             "roles": {"user": {"permissions": [{"uri": "", "match": "prefix", "allow": ["call"]}]}}}
    log_file = tmp_path / "log.json"
    router = RouterProcess(tmp_path, {"realms": [realm], "cluster": None, "node": {"name": "edge-7"},
                                      "admin": {"data_dir": None}},
                           args=("--log-format", "json"), log_file=log_file).start()
    try:
        try:
            await connect(router.url, authmethods=["ticket"], authid="bob", on_challenge=answer_ticket("wrong"))
        except Aborted:
            pass
        bob = await connect(router.url, authmethods=["ticket"], authid="bob", on_challenge=answer_ticket("pw"))
        bob.leave()
        await with_timeout(bob.left)
        s = socket.create_connection(("127.0.0.1", router.port), timeout=5)  # a bad path: refused, logged
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        s.recv(4096)
        s.close()
        for _ in range(100):
            if "refusing WebSocket" in log_file.read_text():
                break
            await threads.deferToThread(lambda: __import__("time").sleep(0.05))
    finally:
        router.signal()
        await threads.deferToThread(router.proc.wait, 15)
        router.stop()
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert records and all(r.get("node_id") == "edge-7" for r in records)
    failed = next(r for r in records if "refused" in r["message"] and r.get("authid"))
    joined = next(r for r in records if "joined realm" in r["message"])
    assert failed["authid"] == "bob" == joined["authid"]  # on main: "'bob'" for the failed login
    refusing = next(r for r in records if "refusing WebSocket" in r["message"])
    assert refusing["peer"].startswith("127.0.0.1:") and joined["peer"].startswith("127.0.0.1:")  # not tcp4:
    assert not any("starting on" in r["message"] or "Port" in r["message"] and "Closed" in r["message"]
                   for r in records), [r["message"] for r in records]


# -- the admin CLI and /health ----------------------------------------------------------------------
ADMIN = {"data_dir": None, "users": {"root": {"ticket": hash_secret("root-pw", iterations=1000)}}}


def _admin(router: RouterProcess, *argv: str) -> subprocess.CompletedProcess:
    return courtyard("admin", "--url", router.url, "--authid", "root", "--ticket", "root-pw", *argv)


@ensure
async def test_the_admin_cli_says_no_realm_and_never_none(tmp_path):
    router = RouterProcess(tmp_path, {"admin": ADMIN}).start()
    try:
        client = await connect(router.url)
        r = await threads.deferToThread(_admin, router, "sessions", "list", "--realm", "nosuch")
        assert r.returncode == 1 and "no realm 'nosuch'" in r.stderr, r.stdout + r.stderr
        r = await threads.deferToThread(_admin, router, "sessions", "count", "--realm", "nosuch")
        assert r.returncode == 1 and "courtyard.error.no_such_realm" in r.stderr, r.stdout + r.stderr
        r = await threads.deferToThread(_admin, router, "nodes", "list")
        assert r.returncode == 0 and "None" not in r.stdout, r.stdout
        r = await threads.deferToThread(_admin, router, "sessions", "get", str(client.welcome.session))
        assert r.returncode == 0 and "None" not in r.stdout, r.stdout
        r = await threads.deferToThread(_admin, router, "--json", "realms", "get", "realm1")
        policy = json.loads(r.stdout)["policy"]  # the embedded realm1: no definition, the defaults' policy
        assert policy["authmethods"] == ["anonymous"] and policy["anonymous_authrole"] == "anonymous"
        assert policy["roles"]["anonymous"] == [{"uri": "", "match": "prefix",
                                                 "allow": ["call", "publish", "register", "subscribe"]}]
        r = await threads.deferToThread(_admin, router, "realms", "get", "realm1")
        assert "policy" in r.stdout and "None" not in r.stdout, r.stdout
        r = await threads.deferToThread(_admin, router, "sessions", "list")
        rows = r.stdout.splitlines()
        assert rows[0].split() == ["id", "authid", "authrole", "authmethod", "peer", "agent", "idle", "node"]
        assert any(row.split()[0] == str(client.welcome.session) and " anonymous " in row for row in rows[1:])
        client.leave()
    finally:
        router.stop()
