"""The admin procedures and their persistence, on a real session table (issue 6). The same procedures
over WAMP, with real clients, are in tests/test_admin_realm.py."""

from __future__ import annotations

import pytest

from realms.admin import AdminAPI, AdminError
from realms.registry import RealmRegistry
from realms.schema import parse_realm
from realms.store import RealmStore
from router.storage.memory import MemoryStorage
from router.tuplespace import SessionTable


class Conn:
    """Stands in for a connection: records the GOODBYE it is asked to send."""

    def __init__(self):
        self.closed = None

    def close(self, reason, message=None):
        self.closed = (reason, message)


def _api(tmp_path, yaml_realms=({"uri": "realm1"},)):
    registry = RealmRegistry([parse_realm(r, "r") for r in yaml_realms])
    store = RealmStore(tmp_path / "data" / "courtyard.db")
    store.apply(registry)
    table = SessionTable(MemoryStorage())
    return AdminAPI(registry, table, store, "courtyard.admin", wipe=lambda: 0), table, registry


def _open(table, realm="realm1", authid="alice"):
    return table.open(realm, Conn(), peer=None, agent=None, roles={"caller": {}}, authid=authid,
                      authrole="user", authmethod="ticket", authprovider="static")


def test_realm_lifecycle_survives_a_restart(tmp_path):
    api, table, _ = _api(tmp_path)
    created = api.call("courtyard.realm.create", "root", ["shop"], {"definition": {"auth": {"ticket": True}}})
    assert created["uri"] == "shop" and created["sessions"] == 0
    api.call("courtyard.user.add", "root", ["shop", "bob"], {"role": "customer", "ticket": "pw"})
    api.call("courtyard.realm.update", "root", ["shop", {"limits": {"rate": {"limit": 5, "duration": 1}}}], {})
    assert api.call("courtyard.realm.list", "root", [], {}) == ["realm1", "shop"]
    api.call("courtyard.realm.delete", "root", ["realm1"], {})
    # a new process: YAML says realm1 and no shop; the store says otherwise, and wins
    api2, _, registry2 = _api(tmp_path)
    assert api2.call("courtyard.realm.list", "root", [], {}) == ["shop"]
    shop = registry2.get("shop")
    assert shop.auth.ticket and shop.limits.rate.limit == 5
    assert shop.users["bob"].role == "customer"
    assert shop.users["bob"].ticket.startswith("pbkdf2-sha256$")  # hashed, never kept plain


LOGINS = ({"uri": "realm1", "auth": {"ticket": True, "wampcra": True}},)  # users need a method to log in with


def test_user_procedures_never_show_secrets(tmp_path):
    api, table, registry = _api(tmp_path, LOGINS)
    user = api.call("courtyard.user.add", "root", ["realm1", "carol"], {"role": "admin", "wampcra": "cra-secret"})
    assert user == {"authid": "carol", "role": "admin", "authmethods": ["wampcra"], "cryptosign": []}
    assert "cra-secret" not in repr(api.call("courtyard.user.get", "root", ["realm1", "carol"], {}))
    api.call("courtyard.user.update", "root", ["realm1", "carol"], {"role": "ops", "ticket": "t"})
    assert api.call("courtyard.user.get", "root", ["realm1", "carol"], {})["authmethods"] == ["ticket", "wampcra"]
    s = _open(table, authid="carol")
    assert api.call("courtyard.user.remove", "root", ["realm1", "carol"], {}) == 1
    assert s.transport.closed[0] == "courtyard.close.user_removed"
    assert api.call("courtyard.user.list", "root", ["realm1"], {}) == []
    api2, _, _ = _api(tmp_path, LOGINS)
    assert api2.call("courtyard.user.list", "root", ["realm1"], {}) == []


def test_session_procedures(tmp_path):
    api, table, _ = _api(tmp_path)
    a = _open(table, authid="alice")
    b = _open(table, authid="alice")
    c = _open(table, authid="bob")
    assert api.call("courtyard.session.count", "root", [], {"realm": "realm1"}) == 3
    assert sorted(api.call("courtyard.session.list", "root", [], {"realm": "realm1", "authid": "alice"})) == \
        sorted([a.id, b.id])
    assert api.call("courtyard.session.activity", "root", ["realm1", 60], {}) == 2
    assert api.call("courtyard.session.set_data", "root", [a.id, {"k": "v", "n": 1}], {}) == {"k": "v", "n": 1}
    assert api.call("courtyard.session.set_data", "root", [a.id, {"k": None, "b": True}], {}) == {"n": 1, "b": True}
    assert api.call("courtyard.session.get", "root", [a.id], {})["data"] == {"n": 1, "b": True}
    api.call("courtyard.session.kill", "root", [c.id], {"reason": "com.example.bye", "message": "go"})
    assert c.transport.closed == ("com.example.bye", "go")
    assert api.call("courtyard.session.kill_by_authid", "root", ["realm1", "alice"], {}) == 2
    assert a.transport.closed[0] == "wamp.close.killed"


@pytest.mark.parametrize("procedure,args,kwargs,uri", [
    ("courtyard.realm.get", ["nope"], {}, "courtyard.error.no_such_realm"),
    ("courtyard.realm.create", ["realm1"], {}, "courtyard.error.realm_exists"),
    ("courtyard.realm.create", ["x"], {"definition": {"auth": {"ticket": "yes"}}}, "wamp.error.invalid_argument"),
    ("courtyard.realm.create", [5], {}, "wamp.error.invalid_argument"),
    ("courtyard.realm.update", ["realm1", {"uri": "other"}], {}, "wamp.error.invalid_argument"),
    ("courtyard.realm.delete", ["nope"], {}, "courtyard.error.no_such_realm"),
    ("courtyard.session.get", [123], {}, "wamp.error.no_such_session"),
    ("courtyard.session.get", ["123"], {}, "wamp.error.invalid_argument"),
    ("courtyard.session.kill", [True], {}, "wamp.error.invalid_argument"),
    ("courtyard.session.list", [], {"bogus": 1}, "wamp.error.invalid_argument"),
    ("courtyard.session.activity", ["realm1", "soon"], {}, "wamp.error.invalid_argument"),
    ("courtyard.user.get", ["realm1", "ghost"], {}, "courtyard.error.no_such_user"),
    ("courtyard.user.add", ["realm1", "x"], {"role": "r", "cryptosign": ["zz"]}, "wamp.error.invalid_argument"),
    ("courtyard.user.add", ["realm1"], {}, "wamp.error.invalid_argument"),
    ("courtyard.realm.create", ["x"], {"definition": {"users": {"u": {"role": "r", "wampcra": {"secret": "s"}}}}},
     "wamp.error.invalid_argument"),
    ("courtyard.user.add", ["realm1", "x"], {"role": "r", "wampcra": ""}, "wamp.error.invalid_argument"),
    ("courtyard.user.add", ["realm1", "x"], {"role": "r", "wampcra": {"secret": 5}}, "wamp.error.invalid_argument"),
    ("courtyard.user.add", ["realm1", "x"], {"role": "r", "wampcra": {"salt": "s"}}, "wamp.error.invalid_argument"),
])
def test_bad_input_gets_the_right_error(tmp_path, procedure, args, kwargs, uri):
    api, _, _ = _api(tmp_path)
    with pytest.raises(AdminError) as e:
        api.call(procedure, "root", args, kwargs)
    assert e.value.uri == uri


def test_user_add_twice(tmp_path):
    api, _, _ = _api(tmp_path, LOGINS)
    api.call("courtyard.user.add", "root", ["realm1", "x"], {"role": "r", "ticket": "t"})
    with pytest.raises(AdminError) as e:
        api.call("courtyard.user.add", "root", ["realm1", "x"], {"role": "r", "ticket": "t"})
    assert e.value.uri == "courtyard.error.user_exists"


def test_the_admin_realm_cannot_be_deleted(tmp_path):
    api, _, _ = _api(tmp_path, ({"uri": "realm1"}, {"uri": "courtyard.admin"}))
    with pytest.raises(AdminError) as e:
        api.call("courtyard.realm.delete", "root", ["courtyard.admin"], {})
    assert e.value.uri == "wamp.error.invalid_argument"
    assert "courtyard.admin" in api.call("courtyard.realm.list", "root", [], {})


def test_a_database_from_before_changes_were_kept_as_changes_keeps_yaml_users(tmp_path):
    """Rows written by an older Courtyard (whole definitions, no kind): an updated YAML realm is read
    as changes over the YAML (its users stay), a realm created there as it was written."""
    import sqlite3

    path = tmp_path / "data" / "courtyard.db"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE realms (uri TEXT PRIMARY KEY, definition TEXT);"
                     "CREATE TABLE users (realm TEXT, authid TEXT, definition TEXT, PRIMARY KEY (realm, authid));")
    db.execute("INSERT INTO realms VALUES ('realm1', '{\"uri\": \"realm1\", \"limits\": {\"expires_in\": 9}}')")
    db.execute("INSERT INTO realms VALUES ('shop', '{\"uri\": \"shop\", \"auth\": {\"ticket\": true}}')")
    db.commit()
    db.close()
    yaml_realm = {"uri": "realm1", "users": {"bob": {"role": "user"}}}
    api, _, registry = _api(tmp_path, (yaml_realm,))
    assert registry.get("realm1").limits.expires_in == 9
    assert list(registry.get("realm1").users) == ["bob"]
    assert registry.get("shop").auth.ticket
    api.call("courtyard.realm.update", "root", ["shop", {"limits": {"expires_in": 5}}], {})
    _, _, registry2 = _api(tmp_path, (yaml_realm,))
    assert registry2.get("shop").auth.ticket and registry2.get("shop").limits.expires_in == 5


def test_plain_wampcra_secrets_in_an_older_database_become_salted_keys(tmp_path):
    import sqlite3

    from realms.secrets import derive_cra_key

    path = tmp_path / "data" / "courtyard.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.executescript("CREATE TABLE realms (uri TEXT PRIMARY KEY, definition TEXT);"
                         "CREATE TABLE users (realm TEXT, authid TEXT, definition TEXT, PRIMARY KEY (realm, authid));")
        db.execute("INSERT INTO users VALUES ('realm1', 'carol', "
                   "'{\"role\": \"user\", \"wampcra\": {\"secret\": \"old-plain-secret\"}}')")
    db.close()
    _, _, registry = _api(tmp_path)
    assert b"old-plain-secret" not in path.read_bytes()
    cra = registry.get("realm1").users["carol"].wampcra
    assert cra.salt and cra.key == derive_cra_key("old-plain-secret", cra.salt, cra.iterations, cra.keylen)


def test_a_yaml_realm_deleted_and_created_again_starts_empty_after_a_restart(tmp_path):
    yaml_realm = {"uri": "realm1", "users": {"bob": {"role": "user"}}, "limits": {"expires_in": 9}}
    api, _, _ = _api(tmp_path, (yaml_realm,))
    api.call("courtyard.realm.delete", "root", ["realm1"], {})
    api.call("courtyard.realm.create", "root", ["realm1"], {"definition": {"auth": {"ticket": True}}})
    api.call("courtyard.realm.update", "root", ["realm1", {"limits": {"idle_timeout": 7}}], {})
    _, _, registry = _api(tmp_path, (yaml_realm,))
    realm1 = registry.get("realm1")
    assert realm1.users == {} and realm1.auth.ticket
    assert (realm1.limits.expires_in, realm1.limits.idle_timeout) == (None, 7)
