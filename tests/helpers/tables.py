"""Session records for the session table's tests over both backends, and the check that Redis mirrors
a table exactly."""

from __future__ import annotations


def open_session(table, realm="realm1", authid="alice", authrole="user", realm_obj=None):
    """A record opened in `table` as a plain anonymous session would be (its transport a placeholder)."""
    return table.open(realm, object(), peer=("127.0.0.1", 1), agent="t", roles={"caller": {}},
                      authid=authid, authrole=authrole, authmethod="anonymous", authprovider="static",
                      realm=realm_obj)


def assert_mirrored(table, server):
    """Redis holds exactly the table's records, in exactly the indexes their fields put them in."""
    from router.storage.redis import authid_key, authrole_key, node_sessions_key, realm_key

    local = {s.id: s for s in table.list()}
    assert {int(i) for i in server.command("SMEMBERS", "cy:sessions")} == set(local)
    assert {int(i) for i in server.command("SMEMBERS", node_sessions_key("node-a"))} == set(local)
    for sid, s in local.items():
        assert server.command("HGET", f"cy:s:{sid}", "authid") == s.authid
        for key in (realm_key(s.realm_uri), authid_key(s.realm_uri, s.authid), authrole_key(s.realm_uri, s.authrole)):
            assert server.command("SISMEMBER", key, str(sid)) == 1
    index_keys = [k for pattern in ("cy:r:*", "cy:a:*", "cy:ro:*") for k in server.command("KEYS", pattern)]
    assert sum(server.command("SCARD", k) for k in index_keys) == 3 * len(local)
    assert len(server.command("KEYS", "cy:s:*")) == len(local)
