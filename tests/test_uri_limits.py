"""URIs and per-session tables bounded, over real sockets (issue 11, item 5): `limits.max_uri_length`
wherever a client's URI enters, and `limits.max_subscriptions_per_session` /
`max_registrations_per_session`, so that one session cannot keep gigabytes of topic strings."""

from __future__ import annotations

import pytest_twisted
from autobahn.wamp.exception import ApplicationError

from realms.secrets import hash_secret
from tests.wampclient import connect, raw_connect

ensure = pytest_twisted.ensureDeferred
INVALID_URI = "wamp.error.invalid_uri"
ADMIN = {"users": {"root": {"ticket": hash_secret("root-pw", iterations=1000)}}}


def _uri(n: int, head: str = "com.") -> str:
    return head + "x" * (n - len(head))


async def _refused(peer, msg: list, uri: str = INVALID_URI) -> str:
    """Send a request; its ERROR must carry `uri` and a short text, which is returned."""
    peer.send(msg)
    err = await peer.recv()
    assert err[:3] == [8, msg[0], msg[1]] and err[4] == uri, err[:5]
    assert len(err[5][0]) < 300, len(err[5][0])
    return err[5][0]


@ensure
async def test_requests_over_max_uri_length_get_invalid_uri(make_node):
    node = make_node(limits={"max_uri_length": 100})
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    long = _uri(101)
    text = await _refused(peer, [32, 1, {}, long])
    assert "101 characters" in text and "limits.max_uri_length" in text
    await _refused(peer, [32, 2, {"match": "prefix"}, long])
    await _refused(peer, [32, 3, {"match": "wildcard"}, long])
    await _refused(peer, [64, 4, {}, long])
    await _refused(peer, [64, 5, {"match": "prefix"}, long])
    await _refused(peer, [16, 6, {"acknowledge": True}, long, []])
    await _refused(peer, [48, 7, {}, long, []])
    peer.send([16, 8, {}, long, []])  # unacknowledged: dropped without an answer
    # exactly at the limit: taken
    peer.send([32, 9, {}, _uri(100)])
    assert (await peer.recv())[:2] == [33, 9]
    peer.send([64, 10, {}, _uri(100)])
    assert (await peer.recv())[:2] == [65, 10]
    peer.send([16, 11, {"acknowledge": True}, _uri(100), []])
    assert (await peer.recv())[:2] == [17, 11]
    broker = node.realm_router("realm1").broker
    assert all(len(s.topic) <= 100 for s in broker._by_id.values())


@ensure
async def test_meta_arguments_and_testament_topics_over_the_limit_get_invalid_uri(make_node):
    node = make_node(limits={"max_uri_length": 100})
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    other = await raw_connect(node.url, "msgpack")
    welcome = await other.hello()
    long = _uri(101)
    for i, (procedure, args, kwargs) in enumerate([
            ("wamp.subscription.lookup", [long], {}),
            ("wamp.subscription.match", [long], {}),
            ("wamp.registration.lookup", [long], {}),
            ("wamp.registration.match", [long], {}),
            ("wamp.session.add_testament", [long, [], {}], {}),
            ("wamp.session.kill", [welcome[1]], {"reason": _uri(101, "wamp.close.")}),
            ("wamp.session.kill_all", [], {"reason": _uri(101, "wamp.close.")})], start=1):
        text = await _refused(peer, [48, i, {}, procedure, args, kwargs])
        assert "limits.max_uri_length" in text, (procedure, text)
    assert node.table.size("realm1") == 2


@ensure
async def test_hello_realm_and_goodbye_reason_over_the_limit_get_abort(make_node):
    node = make_node(limits={"max_uri_length": 100})
    peer = await raw_connect(node.url, "json")
    abort = await peer.hello(realm=_uri(101, "realm."))
    assert abort[0] == 3 and abort[2] == INVALID_URI and len(abort[1]["message"]) < 300
    assert "limits.max_uri_length" in abort[1]["message"]
    peer = await raw_connect(node.url, "json")
    assert (await peer.hello())[0] == 2
    peer.send([6, {}, _uri(101, "wamp.close.")])
    abort = await peer.recv()
    assert abort[0] == 3 and abort[2] == INVALID_URI
    assert node.table.size("realm1") == 0


@ensure
async def test_the_default_limit_is_4096_characters(node):
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    peer.send([32, 1, {}, _uri(4096)])
    assert (await peer.recv())[:2] == [33, 1]
    await _refused(peer, [32, 2, {}, _uri(4097)])
    await _refused(peer, [16, 3, {"acknowledge": True}, _uri(1024 * 1024 - 100), []])  # near the message size


@ensure
async def test_admin_kill_reasons_and_realm_uris_over_the_limit_are_refused(make_node):
    node = make_node(admin=dict(ADMIN), limits={"max_uri_length": 100})
    admin = await connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                          on_challenge=lambda c: "root-pw")
    victim = await raw_connect(node.url, "json")
    sid = (await victim.hello())[1]
    for procedure, args in (("courtyard.session.kill", [sid]), ("courtyard.session.kill_all", ["realm1"]),
                            ("courtyard.session.kill_by_authid", ["realm1", "x"])):
        try:
            await admin.call(procedure, *args, reason=_uri(101, "wamp.close."))
        except ApplicationError as e:
            assert e.error == INVALID_URI and "100" in e.args[0], e
        else:
            raise AssertionError(f"{procedure} took a reason over the limit")
    for uri in (_uri(101, "realm."), "my realm", "a..b"):  # a realm no HELLO could name
        try:
            await admin.call("courtyard.realm.create", uri)
        except ApplicationError as e:
            assert e.error == INVALID_URI and len(e.args[0]) < 200, e
        else:
            raise AssertionError(f"realm {uri[:20]!r} was created")
    assert await admin.call("courtyard.realm.list") == ["courtyard.admin", "realm1"]
    assert node.table.lookup(sid) is not None
    await admin.call("courtyard.session.kill", sid, reason="wamp.close.killed")
    goodbye = await victim.recv()
    assert goodbye[0] == 6 and goodbye[2] == "wamp.close.killed"


# -- per-session subscription and registration caps --------------------------------------------------
@ensure
async def test_subscriptions_per_session_are_capped(make_node):
    node = make_node(limits={"max_subscriptions_per_session": 5})
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    ids = []
    for i in range(5):
        peer.send([32, i + 1, {"match": "prefix" if i == 4 else "exact"}, f"com.t{i}"])
        answer = await peer.recv()
        assert answer[:2] == [33, i + 1]
        ids.append(answer[2])
    text = await _refused(peer, [32, 6, {}, "com.t5"], "courtyard.error.too_many_subscriptions")
    assert "5 subscriptions" in text
    peer.send([32, 7, {}, "com.t0"])  # the same subscription again holds nothing more: fine
    assert (await peer.recv()) == [33, 7, ids[0]]
    peer.send([34, 8, ids[1]])
    assert (await peer.recv()) == [35, 8]
    peer.send([32, 9, {}, "com.t5"])  # room again
    assert (await peer.recv())[:2] == [33, 9]
    other = await raw_connect(node.url, "msgpack")  # another session has its own count
    await other.hello()
    other.send([32, 1, {}, "com.t6"])
    assert (await other.recv())[:2] == [33, 1]
    assert len(node.realm_router("realm1").broker._by_session) == 2


@ensure
async def test_registrations_per_session_are_capped_and_router_procedures_are_not(make_node):
    node = make_node(admin=dict(ADMIN), limits={"max_registrations_per_session": 3})
    peer = await raw_connect(node.url, "msgpack")
    await peer.hello()
    ids = []
    for i in range(3):
        peer.send([64, i + 1, {}, f"com.p{i}"])
        answer = await peer.recv()
        assert answer[:2] == [65, i + 1]
        ids.append(answer[2])
    text = await _refused(peer, [64, 4, {}, "com.p3"], "courtyard.error.too_many_registrations")
    assert "3 registrations" in text
    await _refused(peer, [64, 5, {"match": "wildcard"}, "com..p"], "courtyard.error.too_many_registrations")
    peer.send([66, 6, ids[0]])
    assert (await peer.recv()) == [67, 6]
    peer.send([64, 7, {}, "com.p3"])
    assert (await peer.recv())[:2] == [65, 7]
    # the admin realm's ~20 procedures are the router's own: not capped
    admin = await connect(node.url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                          on_challenge=lambda c: "root-pw")
    assert "realm1" in await admin.call("courtyard.realm.list")
