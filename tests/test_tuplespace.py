"""The session table API over both backends: memory, and redis (a cluster node's records in memory,
mirrored to a real redis-server; after each test the mirror must equal the table). Issue 2, point 5;
issue 12, point 2."""

from __future__ import annotations

import pytest
import pytest_twisted

from router.session import QuotaWindow, RateWindow
from router.storage.memory import MemoryStorage
from router.tuplespace import SessionNotFound, SessionTable, TableFull
from tests.helpers.tables import assert_mirrored, open_session


class FakeRealm:
    """Records detach calls; the real realm is exercised by the end-to-end tests."""

    def __init__(self):
        self.detached = []

    def detach(self, session):
        self.detached.append(session.id)


@pytest.fixture(params=["memory", "redis"])
def table(request):
    if request.param == "memory":
        yield SessionTable(MemoryStorage())
        return
    from router.cluster.connection import connect
    from router.cluster.url import parse_redis_url
    from router.storage.redis import RedisStorage

    server = request.getfixturevalue("redis_server")
    conn = pytest_twisted.blockon(connect(parse_redis_url(server.url)))
    storage = RedisStorage("node-a", activity_interval=3600)
    storage.attach(conn)
    table = SessionTable(storage)
    yield table
    pytest_twisted.blockon(storage.flush())
    try:
        assert_mirrored(table, server)
    finally:
        storage.detach()
        pytest_twisted.blockon(conn.disconnect())


def test_open_fetch_lookup(table):
    s = open_session(table)
    assert 1 <= s.id <= 2**53
    assert table.fetch(s.id) is s
    assert table.lookup(s.id) is s
    assert table.lookup(12345) is None
    with pytest.raises(SessionNotFound):
        table.fetch(12345)


def test_size_and_list_by_realm_authid_authrole(table):
    a1 = open_session(table, "r1", "alice", "user")
    a2 = open_session(table, "r1", "alice", "admin")
    b = open_session(table, "r1", "bob", "user")
    c = open_session(table, "r2", "alice", "user")
    assert table.size() == 4 and table.size("r1") == 3 and table.size("r2") == 1 and table.size("r3") == 0
    assert {s.id for s in table.list()} == {a1.id, a2.id, b.id, c.id}
    assert {s.id for s in table.list("r1")} == {a1.id, a2.id, b.id}
    assert {s.id for s in table.list("r1", authid="alice")} == {a1.id, a2.id}
    assert {s.id for s in table.list("r1", authrole="user")} == {a1.id, b.id}
    assert {s.id for s in table.list("r1", authid="alice", authrole="user")} == {a1.id}
    assert {s.id for s in table.list(authid="alice")} == {a1.id, a2.id, c.id}


def test_list_active_within(table):
    old = open_session(table)
    new = open_session(table)
    old.last_active -= 100
    assert [s.id for s in table.list(active_within=10)] == [new.id]


def test_activity_counts_distinct_recent_authids(table):
    open_session(table, authid="alice")
    open_session(table, authid="alice")  # a second device
    open_session(table, authid="bob")
    stale = open_session(table, authid="carol")
    stale.last_active -= 3600
    open_session(table, "elsewhere", authid="dave")
    assert table.activity("realm1", 60) == 2
    assert table.activity("realm1", 7200) == 3
    assert table.activity("nowhere", 60) == 0


def test_incr_seq_starts_at_one_and_wraps_to_one(table):
    s = open_session(table)
    assert table.incr_seq(s.id) == 1
    assert table.incr_seq(s.id) == 2
    s.seq = 2**53
    assert table.incr_seq(s.id) == 1


def test_update_reindexes(table):
    s = open_session(table, authid="alice", authrole="user")
    table.update(s.id, authid="carol", authrole="admin", data={"k": "v"})
    assert table.list("realm1", authid="alice") == []
    assert table.list("realm1", authrole="user") == []
    assert table.list("realm1", authid="carol") == [s]
    assert table.list("realm1", authrole="admin") == [s]
    assert table.to_details_map(s.id)["data"] == {"k": "v"}
    with pytest.raises(ValueError):
        table.update(s.id, id=5)
    with pytest.raises(SessionNotFound):
        table.update(999, authid="x")


def test_close_removes_everything_and_detaches_from_realm(table):
    realm = FakeRealm()
    closed = []
    table.on_close(lambda s: closed.append(s.id))
    s = open_session(table, realm_obj=realm)
    assert table.close(s.id) is s
    assert realm.detached == [s.id] and closed == [s.id]
    assert table.size() == 0 and table.lookup(s.id) is None
    assert table.list("realm1", authid="alice") == [] and table.list("realm1", authrole="user") == []
    assert table.close(s.id) is None  # twice is harmless
    assert realm.detached == [s.id]


def test_max_sessions():
    table = SessionTable(MemoryStorage(), max_sessions=2)
    open_session(table)
    open_session(table)
    with pytest.raises(TableFull):
        open_session(table)


def test_ids_are_redrawn_on_collision(monkeypatch, table):
    import router.tuplespace as ts

    draws = iter([7, 7, 9])
    monkeypatch.setattr(ts._rand, "randint", lambda a, b: next(draws))
    assert open_session(table).id == 7
    assert open_session(table).id == 9


def test_to_details_map(table):
    s = open_session(table)
    s.rate = RateWindow(10, 1.0)
    s.quota = QuotaWindow(100, 60.0)
    d = table.to_details_map(s.id)
    assert d["session"] == s.id and d["realm"] == "realm1" and d["authid"] == "alice"
    assert d["authrole"] == "user" and d["authmethod"] == "anonymous" and d["authprovider"] == "static"
    assert d["transport"] == {"peername": "tcp4:127.0.0.1:1"}
    assert d["rate"]["remaining"] == 10 and d["quota"]["remaining"] == 100
    assert d["created"].endswith("Z") and d["counters"] == {"messages_in": 0, "messages_out": 0}


def test_indexes_follow_sessions_of_one_authid_through_every_order_of_closing(table):
    """An authid's bucket holds one session bare and several in a dict: both shapes, both ways."""
    devices = [open_session(table, authid="alice") for _ in range(3)]
    other = open_session(table, authid="bob")
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        assert {s.id for s in table.list("realm1", authid="alice")} == {s.id for s in devices}
        for k, i in enumerate(order):
            table.close(devices[i].id)
            left = {devices[j].id for j in order[k + 1:]}
            assert {s.id for s in table.list("realm1", authid="alice")} == left
            assert {s.id for s in table.list("realm1", authrole="user")} == left | {other.id}
        devices = [open_session(table, authid="alice") for _ in range(3)]
    assert table.list("realm1", authid="bob") == [other]
    table.update(other.id, authid="alice")
    assert len(table.list("realm1", authid="alice")) == 4 and table.list("realm1", authid="bob") == []
