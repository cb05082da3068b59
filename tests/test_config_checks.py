"""A config that passes check-config can work (issue 15 item 1): what could never work is an error,
every one reported in one run with its key path; `courtyard start` refuses the same config; the
admin API refuses the same mistakes with wamp.error.invalid_argument naming the field."""

from __future__ import annotations

import subprocess
import sys

import pytest
import pytest_twisted
import yaml
from autobahn.wamp.exception import ApplicationError

from realms.secrets import hash_secret
from router.config import ConfigError, parse, warnings
from tests.wampclient import connect

ensure = pytest_twisted.ensureDeferred
TICKET = hash_secret("pw", iterations=1000)
EVERYTHING = [{"uri": "", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]

BROKEN = {
    "listeners": [{"port": 9001}, {"port": 9001}],
    "realms": [
        {"uri": "my realm!"},
        {"uri": "shop", "auth": {"anonymous": {"authrole": "guest"}, "ticket": True},
         "roles": {"customer": {"permissions": EVERYTHING}},
         "users": {"bob": {"role": "staff", "ticket": TICKET},
                   "eve": {"role": "customer"},
                   "cra": {"role": "customer", "ticket": TICKET, "wampcra": {"secret": "x"}}}},
    ],
    "admin": {"users": {"root": {}}},
}
BROKEN_PATHS = [
    "listeners[1].port",  # two listeners on 127.0.0.1:9001
    "admin.users.root",  # an admin with no credential
    "realms[0].uri",  # no client can join "my realm!"
    "realms[1].auth.anonymous.authrole",  # no role "guest"
    "realms[1].users.bob.role",  # no role "staff"
    "realms[1].users.eve",  # no credential at all
    "realms[1].users.cra.wampcra",  # wampcra is not enabled
]


def test_every_error_is_reported_at_once_with_its_key_path():
    with pytest.raises(ConfigError) as e:
        parse(BROKEN)
    assert [x.path for x in e.value.errors] == BROKEN_PATHS


@pytest.mark.parametrize("raw,path", [
    ({"realms": [{"uri": "a..b"}]}, "realms[0].uri"),
    ({"realms": [{"uri": "x" * 100}], "limits": {"max_uri_length": 64}}, "realms[0].uri"),
    ({"realms": [{"uri": "a", "auth": {"ticket": True}, "users": {"u": {"role": "r", "cryptosign": ["0" * 64]}}}]},
     "realms[0].users.u.cryptosign"),
    ({"realms": [{"uri": "a", "users": {"u": {"role": "r", "ticket": TICKET}}}]}, "realms[0].users.u.ticket"),
    ({"listeners": [{"host": "127.0.0.1", "port": 9002}, {"type": "rawsocket", "port": 9002}]},
     "listeners[1].port"),
    ({"admin": {"users": {"root": {"wampcra": {"secret": "x"}}}}}, "admin.users.root.wampcra"),
])
def test_what_cannot_work_is_an_error(raw, path):
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert path in [x.path for x in getattr(e.value, "errors", [e.value])]


def test_what_can_work_is_not_an_error():
    cfg = parse({"listeners": [{"port": 0}, {"port": 0}, {"host": "127.0.0.2", "port": 9003}, {"port": 9003}],
                 "realms": [{"uri": "com.example.app", "auth": {"anonymous": False, "ticket": True},
                             "roles": {"user": {"permissions": EVERYTHING}},
                             "users": {"bob": {"role": "user", "ticket": TICKET}}}]})
    assert warnings(cfg) == []


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router.cli", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["check-config", "start"])
def test_check_config_and_start_report_all_errors_and_exit_2(tmp_path, command):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BROKEN, "admin": {**BROKEN["admin"], "data_dir": None}}, sort_keys=False))
    r = _cli(command, "-c", str(path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "invalid config (7 errors)" in r.stderr
    lines = [line.strip() for line in r.stderr.splitlines()[1:]]
    assert [line.split(":", 1)[0] for line in lines] == BROKEN_PATHS
    assert "started" not in r.stdout


def test_warnings_are_printed_and_exit_0(tmp_path):
    path = tmp_path / "warn.yaml"
    path.write_text(yaml.safe_dump({"admin": {"data_dir": None}, "realms": [
        {"uri": "open", "auth": {"ticket": True}, "users": {"bob": {"role": "any", "ticket": TICKET}}},
        {"uri": "ruled", "roles": {"anonymous": {"permissions": [{"uri": "", "allow": ["call"]}]}}},
    ]}))
    r = _cli("check-config", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stdout
    assert "warning: realms[0]: users but no roles" in r.stderr
    assert "warning: realms[1].roles.anonymous.permissions[0]: uri \"\" with match exact matches no URI" in r.stderr


ADMIN = {"users": {"root": {"ticket": TICKET}}}


async def _refused(call, *fields: str) -> None:
    with pytest.raises(ApplicationError) as e:
        await call
    assert e.value.error == "wamp.error.invalid_argument"
    for field in fields:
        assert field in e.value.args[0], e.value.args[0]


@ensure
async def test_the_admin_api_refuses_what_cannot_work(make_node):
    node = make_node(admin=dict(ADMIN), realms=[{
        "uri": "shop", "auth": {"anonymous": False, "ticket": True},
        "roles": {"customer": {"permissions": EVERYTHING}},
        "users": {"bob": {"role": "customer", "ticket": TICKET}}}])
    admin = await connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                          on_challenge=lambda c: "pw")
    call = admin.call
    await _refused(call("courtyard.realm.create", "new", definition={"roles": {"x": {}}}),
                   "definition.auth.anonymous.authrole")
    await _refused(call("courtyard.realm.update", "shop", {"roles": {"staff": {}}}), "changes.users.bob.role")
    await _refused(call("courtyard.realm.update", "shop", {"auth": {"anonymous": False, "wampcra": True}}),
                   "changes.users.bob.ticket", "changes.users.bob: no credential")
    await _refused(call("courtyard.user.add", "shop", "eve", "staff", ticket="x"), "user.role")
    await _refused(call("courtyard.user.add", "shop", "eve", "customer", wampcra="x"), "user.wampcra")
    await _refused(call("courtyard.user.update", "shop", "bob", role="staff"), "user.role")
    assert await call("courtyard.realm.list") == ["courtyard.admin", "shop"]  # nothing was changed
    assert (await call("courtyard.user.get", "shop", "bob"))["role"] == "customer"
    assert await call("courtyard.user.list", "shop") == ["bob"]
    with pytest.raises(ApplicationError) as e:
        await call("courtyard.realm.create", "my realm!")
    assert e.value.error == "wamp.error.invalid_uri"
    await call("courtyard.user.add", "shop", "eve", "customer", ticket="eve-pw")  # a good one is taken


def test_every_bad_value_inside_one_part_is_reported_too():
    raw = {"listeners": [{"port": "x", "path": "ws", "serializers": ["xml"], "colour": 1}],
           "limits": {"max_sessions": 0, "admin_reserve": None},
           "realms": [{"uri": "a", "auth": {"ticket": "yes", "wampcra": 1},
                       "users": {"u": {"role": 5, "ticket": "plain", "cryptosign": ["zz"]}},
                       "roles": {"r": {"permissions": [{"uri": 1, "match": "regex", "allow": ["eat"]}]}}}]}
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert sorted(x.path for x in e.value.errors) == sorted([
        "listeners[0].colour", "listeners[0].serializers", "listeners[0].path", "listeners[0].port",
        "limits.max_sessions", "limits.admin_reserve",
        "realms[0].auth.ticket", "realms[0].auth.wampcra",
        "realms[0].users.u.role", "realms[0].users.u.ticket", "realms[0].users.u.cryptosign",
        "realms[0].roles.r.permissions[0].uri", "realms[0].roles.r.permissions[0].match",
        "realms[0].roles.r.permissions[0].allow"])


def test_check_config_says_what_the_admin_database_overrides(tmp_path):
    from realms.store import RealmStore

    store = RealmStore(tmp_path / "data" / "courtyard.db")
    store.save_realm("shop", {"uri": "shop", "auth": {"ticket": True}, "roles": {"customer": {}}})
    store.update_realm("realm1", {"limits": {"idle_timeout": 60}})
    store.save_user("shop", "bob", {"role": "staff", "ticket": TICKET})  # a role shop does not have
    store.save_realm("gone", None)
    store.close()
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"admin": {"data_dir": str(tmp_path / "data")}}))
    r = _cli("check-config", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:5] == [
        f"admin database {tmp_path / 'data' / 'courtyard.db'} overrides the config file:",
        "  realm shop: defined here", "  realm realm1: limits changed", "  realm gone: deleted",
        "  user bob of realm shop: defined here"]
    assert "warning: realm shop (with the admin changes).users.bob.role: role 'staff' is not defined" in r.stderr
