"""The admin realm over real sockets (issue 6): an admin creates a realm and a user, a client joins
with them, the admin finds, tags and kills its session, deletes the realm; changes survive a restart;
only admins get in; the `courtyard admin` CLI against a live router."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError

from realms.secrets import hash_secret
from tests.routerproc import RouterProcess
from tests.wampclient import Aborted, connect, with_timeout

ensure = pytest_twisted.ensureDeferred
ADMIN = {"users": {"root": {"ticket": hash_secret("root-pw", iterations=1000)}}}


def _admin(url: str, serializer: str = "json"):
    return connect(url, serializer, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                   on_challenge=lambda c: "root-pw")


@ensure
async def test_admin_story(make_node, serializer):
    node = make_node(admin=dict(ADMIN))
    admin = await _admin(node.url, serializer)
    assert admin.welcome.authrole == "admin"
    created = await admin.call("courtyard.realm.create", "shop",
                               definition={"auth": {"anonymous": False, "ticket": True}})
    assert created["uri"] == "shop"
    await admin.call("courtyard.user.add", "shop", "bob", role="customer", ticket="bob-pw")
    bob = await connect(node.url, serializer, realm="shop", authmethods=["ticket"], authid="bob",
                        on_challenge=lambda c: "bob-pw")
    assert (bob.welcome.authid, bob.welcome.authrole) == ("bob", "customer")
    sessions = await admin.call("courtyard.session.list", realm="shop")
    assert sessions == [bob.welcome.session]
    assert await admin.call("courtyard.session.count", realm="shop") == 1
    assert await admin.call("courtyard.session.activity", "shop", 60) == 1
    data = await admin.call("courtyard.session.set_data", bob.welcome.session, {"tier": "gold", "score": 3})
    assert data == {"tier": "gold", "score": 3}
    got = await admin.call("courtyard.session.get", bob.welcome.session)
    assert got["authid"] == "bob" and got["data"] == {"tier": "gold", "score": 3}
    await admin.call("courtyard.session.kill", bob.welcome.session, reason="com.shop.banned", message="bye bob")
    details = await with_timeout(bob.left)
    assert (details.reason, details.message) == ("com.shop.banned", "bye bob")
    await admin.call("courtyard.realm.delete", "shop")
    assert "shop" not in await admin.call("courtyard.realm.list")
    with pytest.raises(Aborted) as e:
        await connect(node.url, serializer, realm="shop", authmethods=["ticket"], authid="bob",
                      on_challenge=lambda c: "bob-pw")
    assert e.value.reason == "wamp.error.no_such_realm"


@ensure
async def test_deleting_a_realm_closes_its_sessions_first(make_node):
    node = make_node(admin=dict(ADMIN))
    admin = await _admin(node.url)
    client = await connect(node.url)
    await admin.call("courtyard.realm.delete", "realm1")
    details = await with_timeout(client.left)
    assert details.reason == "courtyard.close.realm_deleted"


@ensure
async def test_only_admins_join_the_admin_realm(make_node):
    node = make_node(admin=dict(ADMIN), realms=[{"uri": "realm1", "auth": {"ticket": True},
                                                 "users": {"eve": {"role": "user", "ticket": hash_secret("e", 1000)}}}])
    with pytest.raises(Aborted) as e:
        await connect(node.url, realm="courtyard.admin")  # anonymous: never
    assert e.value.reason == "wamp.error.no_auth_method"
    with pytest.raises(Aborted) as e:
        await connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                      on_challenge=lambda c: "wrong")
    assert e.value.reason == "wamp.error.authentication_failed"
    # eve is a user of realm1, not of the admin realm
    with pytest.raises(Aborted):
        await connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="eve",
                      on_challenge=lambda c: "e")


@ensure
async def test_admin_bad_input_gets_wamp_errors(make_node):
    node = make_node(admin=dict(ADMIN))
    admin = await _admin(node.url)
    cases = [
        (("courtyard.realm.get", "nope"), {}, "courtyard.error.no_such_realm"),
        (("courtyard.realm.create", "realm1"), {}, "courtyard.error.realm_exists"),
        (("courtyard.realm.create", "x"), {"definition": {"roles": 5}}, "wamp.error.invalid_argument"),
        (("courtyard.session.get", 42), {}, "wamp.error.no_such_session"),
        (("courtyard.session.kill", "forty-two"), {}, "wamp.error.invalid_argument"),
        (("courtyard.session.list",), {"colour": "red"}, "wamp.error.invalid_argument"),
        (("courtyard.user.remove", "realm1", "ghost"), {}, "courtyard.error.no_such_user"),
        (("courtyard.realm.delete", "courtyard.admin"), {}, "wamp.error.invalid_argument"),
    ]
    for args, kwargs, uri in cases:
        with pytest.raises(ApplicationError) as e:
            await admin.call(*args, **kwargs)
        assert e.value.error == uri, args
    assert admin.is_attached()


@ensure
async def test_admin_procedures_are_not_callable_from_other_realms(node):
    client = await connect(node.url)
    with pytest.raises(ApplicationError) as e:
        await client.call("courtyard.realm.list")
    assert e.value.error == "wamp.error.no_such_procedure"


def _admin_cli(router, *argv):
    cmd = [sys.executable, "-m", "router.cli", "admin", "--url", router.url, "--authid", "root", "--ticket", "root-pw",
           *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_changes_survive_a_restart_and_the_cli_works(tmp_path):
    config = {"admin": {"data_dir": str(tmp_path / "data"), **ADMIN}}
    router = RouterProcess(tmp_path, config).start()
    try:
        r = _admin_cli(router, "realms", "create", "shop", "--definition", '{"auth": {"ticket": true}}')
        assert r.returncode == 0, r.stderr
        r = _admin_cli(router, "users", "add", "shop", "bob", "--role", "customer", "--secret", "bob-pw")
        assert r.returncode == 0, r.stderr
        r = _admin_cli(router, "--json", "realms", "list")
        assert json.loads(r.stdout) == ["courtyard.admin", "realm1", "shop"]
        r = _admin_cli(router, "sessions", "kill", "12345")
        assert r.returncode == 1 and "wamp.error.no_such_session" in r.stderr
        r = _admin_cli(router, "sessions", "list", "--realm", "courtyard.admin")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 2  # a header, the CLI's own session, asking
        assert int(r.stdout.splitlines()[1].split()[0]) > 0
        log = router.log()
        assert "admin root called courtyard.realm.create(\"shop\"" in log  # who did what
        assert "bob-pw" not in log  # the secret given to users add is not logged
    finally:
        router.stop()
    again = RouterProcess(tmp_path, config).start()
    try:
        r = _admin_cli(again, "--json", "users", "get", "shop", "bob")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["role"] == "customer"
        r = _admin_cli(again, "realms", "get", "shop")
        assert "ticket" in r.stdout
    finally:
        again.stop()


@ensure
async def test_cli_kill_reaches_the_client(tmp_path):
    from twisted.internet import threads

    router = RouterProcess(tmp_path, {"admin": {"data_dir": None, **ADMIN}}).start()
    try:
        client = await connect(router.url)
        r = await threads.deferToThread(_admin_cli, router, "sessions", "kill", str(client.welcome.session),
                                        "--reason", "wamp.close.killed", "--message", "from the cli")
        assert r.returncode == 0, r.stderr
        details = await with_timeout(client.left)
        assert (details.reason, details.message) == ("wamp.close.killed", "from the cli")
    finally:
        router.stop()
