"""Admin data and secrets over real sockets (issue 11, item 7): a deleted realm leaves nothing behind,
admin changes lie over the YAML as changes, a damaged database is refused by name, and secrets given
to the admin realm are neither stored nor logged in plain text."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

import pytest
import pytest_twisted
import yaml
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from realms.secrets import hash_secret, redact
from realms.store import RealmStore
from tests.helpers.nodes import start_node
from tests.wampclient import Aborted, answer_ticket, answer_wampcra, connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred
ADMIN = {"users": {"root": {"ticket": hash_secret("root-pw", iterations=1000)}}}
EVERYTHING = [{"uri": "", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]


def _admin(url: str):
    return connect(url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                   on_challenge=lambda c: "root-pw")




async def _stop(node) -> None:
    node.config.shutdown_grace = 0.1
    await node.stop()


# -- a deleted realm leaves nothing behind ---------------------------------------------------------
@ensure
async def test_a_recreated_realm_does_not_serve_the_deleted_realms_retained_events(make_node):
    node = make_node(admin=dict(ADMIN))
    admin = await _admin(node.url)
    await admin.call("courtyard.realm.create", "shop")
    publisher = await connect(node.url, realm="shop")
    await publisher.publish("com.shop.news", "old news", options=PublishOptions(retain=True, acknowledge=True))
    await admin.call("courtyard.realm.delete", "shop")
    await with_timeout(publisher.left)
    await admin.call("courtyard.realm.create", "shop")
    subscriber = await connect(node.url, realm="shop")
    got = []
    await subscriber.subscribe(got.append, "com.shop.news", options=SubscribeOptions(get_retained=True))
    await sleep(0.2)
    assert got == []
    assert node.realm_router("shop").broker.retained() == 0


@ensure
async def test_a_realm_deleted_while_a_client_authenticates_refuses_it_cleanly(make_node):
    node = make_node(admin=dict(ADMIN), realms=[{
        "uri": "shop", "auth": {"anonymous": False, "ticket": True},
        "users": {"bob": {"role": "customer", "ticket": hash_secret("bob-pw", iterations=1000)}}}])
    admin = await _admin(node.url)
    peer = await raw_connect(node.url)
    peer.send([1, "shop", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "bob"}])
    assert (await peer.recv())[0] == 4  # CHALLENGE
    await admin.call("courtyard.realm.delete", "shop")
    peer.send([5, "bob-pw", {}])
    abort = await peer.recv()
    assert abort[0] == 3 and abort[2] == "wamp.error.no_such_realm"
    assert "shop" not in node._routers


# -- admin changes are changes over the YAML base --------------------------------------------------
def _yaml_config(data_dir) -> dict:
    return {"admin": {"data_dir": str(data_dir), **ADMIN}, "realms": [{
        "uri": "shop", "auth": {"anonymous": False, "ticket": True},
        "users": {"bob": {"role": "customer", "ticket": hash_secret("bob-pw", iterations=1000)}},
        "roles": {"customer": {"permissions": EVERYTHING}}}]}


@ensure
async def test_updating_a_yaml_realm_keeps_its_yaml_users_across_a_restart(tmp_path):
    node = start_node(**_yaml_config(tmp_path / "data"))
    try:
        admin = await _admin(node.url)
        await admin.call("courtyard.realm.update", "shop", {"limits": {"rate": {"limit": 50, "duration": 1}}})
        await admin.call("courtyard.realm.update", "courtyard.admin", {"limits": {"idle_timeout": 600}})
        await admin.call("courtyard.user.add", "shop", "carol", role="customer", ticket="carol-pw")
        with pytest.raises(Aborted):  # the admin realm stays closed to anyone but its admins
            await connect(node.url, realm="courtyard.admin")
    finally:
        await _stop(node)
    again = start_node(**_yaml_config(tmp_path / "data"))
    try:
        bob = await connect(again.url, realm="shop", authmethods=["ticket"], authid="bob",
                            on_challenge=answer_ticket("bob-pw"))
        assert bob.welcome.authrole == "customer"
        carol = await connect(again.url, realm="shop", authmethods=["ticket"], authid="carol",
                              on_challenge=answer_ticket("carol-pw"))
        assert carol.welcome.authrole == "customer"
        assert again.realms.get("shop").limits.rate.limit == 50
        admin = await _admin(again.url)  # the YAML admin is not locked out
        assert admin.welcome.authrole == "admin"
        assert again.realms.get("courtyard.admin").limits.idle_timeout == 600
        with pytest.raises(Aborted):
            await connect(again.url, realm="courtyard.admin")
    finally:
        await _stop(again)


# -- a database that cannot be read is refused by name ---------------------------------------------
def _damage_pages(path) -> None:
    """A real database with a page in the middle overwritten, as a disk or a bad copy leaves it."""
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE realms (uri TEXT PRIMARY KEY, definition TEXT, kind TEXT);"
                     "CREATE TABLE users (realm TEXT, authid TEXT, definition TEXT, PRIMARY KEY (realm, authid));")
    db.executemany("INSERT INTO users VALUES ('realm1', ?, '{\"role\": \"user\"}')", [(f"u{i}",) for i in range(2000)])
    db.commit()
    db.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3:4096 * 4] = b"\xa5" * 4096
    path.write_bytes(bytes(data))


def _unreadable_record(path) -> None:
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE realms (uri TEXT PRIMARY KEY, definition TEXT, kind TEXT);"
                     "CREATE TABLE users (realm TEXT, authid TEXT, definition TEXT, PRIMARY KEY (realm, authid));"
                     "INSERT INTO realms VALUES ('shop', '{\"auth\": 5', 'created');")
    db.commit()
    db.close()


DAMAGE = {
    "empty": lambda p: p.write_bytes(b""),
    "not sqlite": lambda p: p.write_bytes(b"courtyard? no, a text file\n" * 200),
    "damaged pages": _damage_pages,
    "unreadable record": _unreadable_record,
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("command", ["start", "check-config"])
def test_a_damaged_database_is_refused_by_name(tmp_path, damage, command):
    from tests.routerproc import free_port

    db = tmp_path / "data" / "courtyard.db"
    db.parent.mkdir(mode=0o700)
    DAMAGE[damage](db)
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"listeners": [{"port": free_port()}], "admin": {"data_dir": str(db.parent)}}))
    try:
        r = subprocess.run([sys.executable, "-m", "router.cli", command, "-c", str(config)],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"courtyard {command} took the {damage} database and ran")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and str(db) in line and "move it aside" in line, line


def test_check_config_reads_a_good_database(tmp_path):
    db = tmp_path / "data" / "courtyard.db"
    db.parent.mkdir()
    _unreadable_record(db)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE realms SET definition = '{\"uri\": \"shop\", \"auth\": {\"ticket\": true}}'")
    before = db.read_bytes()
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"admin": {"data_dir": str(db.parent)}}))
    r = subprocess.run([sys.executable, "-m", "router.cli", "check-config", "-c", str(config)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "config OK" in r.stdout, r.stdout + r.stderr
    assert db.read_bytes() == before  # read-only: nothing written, no schema added


# -- secrets given to the admin realm are neither stored nor logged in plain text -------------------
@ensure
async def test_wampcra_secrets_from_the_admin_realm_are_kept_salted_and_never_logged(tmp_path, log_lines):
    data = tmp_path / "data"
    config = {"admin": {"data_dir": str(data), **ADMIN}, "realms": [{
        "uri": "shop", "auth": {"anonymous": False, "ticket": True, "wampcra": True},
        "users": {"yan": {"role": "customer", "wampcra": {"secret": "yaml-cra-secret"}}},
        "roles": {"customer": {"permissions": EVERYTHING}}}]}
    node = start_node(**config)
    try:
        admin = await _admin(node.url)
        # by keyword, by position, nested: every way a secret can come in
        await admin.call("courtyard.user.add", "shop", "carol", role="customer", wampcra="carol-cra-secret")
        await admin.call("courtyard.user.add", "shop", "dan", "customer", "dan-ticket-secret",
                         {"secret": "dan-cra-secret"})
        await admin.call("courtyard.user.update", "shop", "yan", role="customer")  # the YAML's plain secret
        await admin.call("courtyard.user.update", "shop", "carol", wampcra={"secret": "carol-new-secret"})
        for authid, secret in (("carol", "carol-new-secret"), ("dan", "dan-cra-secret"), ("yan", "yaml-cra-secret")):
            c = await connect(node.url, realm="shop", authmethods=["wampcra"], authid=authid,
                              on_challenge=answer_wampcra(secret))
            assert (c.welcome.authid, c.welcome.authmethod) == (authid, "wampcra")
        dan = await connect(node.url, realm="shop", authmethods=["ticket"], authid="dan",
                            on_challenge=answer_ticket("dan-ticket-secret"))
        assert dan.welcome.authid == "dan"
    finally:
        await _stop(node)
    db = data / "courtyard.db"
    stored = b"".join(p.read_bytes() for p in data.iterdir())
    log = "\n".join(log_lines)
    secrets = ("carol-cra-secret", "carol-new-secret", "dan-cra-secret", "dan-ticket-secret", "yaml-cra-secret")
    assert [s for s in secrets if s.encode() in stored] == []
    assert [s for s in secrets if s in log] == []
    assert 'admin root called courtyard.user.add("shop", "dan", "customer", "***", "***")' in log
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    again = start_node(**config)  # what was stored still lets them in
    try:
        for authid, secret in (("carol", "carol-new-secret"), ("yan", "yaml-cra-secret")):
            c = await connect(again.url, realm="shop", authmethods=["wampcra"], authid=authid,
                              on_challenge=answer_wampcra(secret))
            assert c.welcome.authid == authid
    finally:
        await _stop(again)


def test_an_existing_database_open_to_others_is_tightened(tmp_path, log_lines):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    db = data / "courtyard.db"
    first = RealmStore(db)
    first.save_realm("shop", {"uri": "shop"})  # the file is made with the first change
    first.close()
    os.chmod(db, 0o644)
    RealmStore(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(data.stat().st_mode) == 0o700
    assert sum("tightened permissions" in line for line in log_lines) == 2


def test_log_masking_walks_nested_structures():
    deep: dict = {"x": "fine"}
    for _ in range(100):
        deep = {"next": deep}
    shown = repr(redact({"wampcra": "a", "opts": [{"password": "b", "inner": {"api_key": "c", "Ticket": "d"}}],
                         "deep": deep, "long": "z" * 10_000}))
    assert not any(f"'{s}'" in shown for s in "abcd")
    assert shown.count("***") == 4 and len(shown) < 2_000


def _admin_cli(router, *argv):
    cmd = [sys.executable, "-m", "router.cli", "admin", "--url", router.url, "--authid", "root", "--ticket", "root-pw",
           *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@ensure
async def test_the_cli_updates_realms_and_users_and_gives_wampcra_secrets(tmp_path):
    from twisted.internet import threads

    from tests.routerproc import RouterProcess

    config = {"admin": {"data_dir": str(tmp_path / "data"), **ADMIN}, "realms": [{
        "uri": "shop", "auth": {"anonymous": False, "wampcra": True},
        "roles": {"customer": {"permissions": EVERYTHING}}}]}
    router = RouterProcess(tmp_path, config).start()
    try:
        r = await threads.deferToThread(_admin_cli, router, "users", "add", "shop", "eve", "--role", "staff",
                                        "--wampcra", "eve-cra-secret")  # no such role in shop
        assert r.returncode == 1 and "invalid_argument: user.role: role 'staff' is not defined" in r.stderr
        for argv in (("users", "add", "shop", "eve", "--role", "customer", "--wampcra", "x"),
                     ("users", "update", "shop", "eve", "--wampcra", "eve-cra-secret"),
                     ("realms", "update", "shop", "--definition", '{"limits": {"idle_timeout": 300}}')):
            r = await threads.deferToThread(_admin_cli, router, *argv)
            assert r.returncode == 0, r.stderr
        r = await threads.deferToThread(_admin_cli, router, "realms", "update", "shop", "--definition", "{oops")
        assert r.returncode == 2 and "not JSON" in r.stderr and "Traceback" not in r.stderr
        eve = await connect(router.url, realm="shop", authmethods=["wampcra"], authid="eve",
                            on_challenge=answer_wampcra("eve-cra-secret"))
        assert eve.welcome.authrole == "customer"
        assert "eve-cra-secret" not in router.log()
        r = await threads.deferToThread(_admin_cli, router, "--json", "realms", "get", "shop")
        assert '"idle_timeout": 300' in r.stdout
    finally:
        router.stop()


# -- the admin database failing while the node runs --------------------------------------------------
async def _storage_failed(call) -> str:
    try:
        await call
    except ApplicationError as e:
        assert e.error == "courtyard.error.storage_failed", e
        return e.args[0]
    raise AssertionError("the change was answered as stored")


@ensure
async def test_a_change_the_database_cannot_take_is_refused_and_not_made(tmp_path, log_lines):
    data = tmp_path / "data"
    roles = {r: {"permissions": EVERYTHING} for r in ("anonymous", "user", "boss")}
    config = {"admin": {"data_dir": str(data), **ADMIN},
              "realms": [{"uri": "realm1", "auth": {"ticket": True}, "roles": roles}]}
    db = data / "courtyard.db"
    node = start_node(**config)
    try:
        admin = await _admin(node.url)
        await admin.call("courtyard.user.add", "realm1", "ann", role="user", ticket="ann-pw")
        lock = sqlite3.connect(db, isolation_level=None)  # another process's writer holds the file
        lock.execute("BEGIN EXCLUSIVE")
        try:
            text = await _storage_failed(admin.call("courtyard.user.add", "realm1", "bob", role="user", ticket="b"))
            assert str(db) in text and "locked" in text
            await _storage_failed(admin.call("courtyard.realm.create", "shop"))
            await _storage_failed(admin.call("courtyard.realm.update", "realm1", {"limits": {"expires_in": 60}}))
            await _storage_failed(admin.call("courtyard.realm.delete", "realm1"))
            await _storage_failed(admin.call("courtyard.user.update", "realm1", "ann", role="boss"))
            await _storage_failed(admin.call("courtyard.user.remove", "realm1", "ann"))
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # nothing of it was made in the running node either
        assert await admin.call("courtyard.user.list", "realm1") == ["ann"]
        assert (await admin.call("courtyard.user.get", "realm1", "ann"))["role"] == "user"
        assert "shop" not in await admin.call("courtyard.realm.list")
        assert "limits" not in await admin.call("courtyard.realm.get", "realm1")
        failed = [line for line in log_lines if "could not be stored" in line]
        assert len(failed) == 6 and all(str(db) in line for line in failed), failed
        # the file takes changes again: the node carries on
        await admin.call("courtyard.user.add", "realm1", "bob", role="user", ticket="b")
        db.unlink()  # removed under the running node: writes would be lost at the next start
        text = await _storage_failed(admin.call("courtyard.user.add", "realm1", "cid", role="user", ticket="c"))
        assert str(db) in text
        assert await admin.call("courtyard.user.list", "realm1") == ["ann", "bob"]
    finally:
        await _stop(node)
