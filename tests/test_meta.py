"""The WAMP meta API and testaments, end to end with real autobahn clients (issue 4, points 5 and 6)."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import SubscribeOptions
from twisted.internet import defer

from realms.secrets import hash_secret
from router import meta
from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def node(spread):
    """The tests here that take `node` run on one node and on two nodes of a cluster, their clients spread."""
    return spread

EVERYTHING = [{"uri": "", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]
TICKETS = {"alice": "user", "bob": "user", "carol": "admin", "lima": "limited", "mute": "mute"}


def _realm() -> dict:
    """Anonymous sessions plus ticket users in three roles; `limited` may call and subscribe but not
    publish, `mute` may do nothing under wamp. (not even call the meta API)."""
    return {"realms": [{
        "uri": "realm1",
        "auth": {"anonymous": True, "ticket": True},
        "users": {name: {"role": role, "ticket": hash_secret(f"{name}-ticket", iterations=1000)}
                  for name, role in TICKETS.items()},
        "roles": {
            "anonymous": {"permissions": EVERYTHING},
            "user": {"permissions": EVERYTHING},
            "admin": {"permissions": EVERYTHING},
            "limited": {"permissions": [{"uri": "", "match": "prefix", "allow": ["call", "subscribe"]}]},
            "mute": {"permissions": [{"uri": "com.", "match": "prefix", "allow": ["call"]}]},
        },
    }]}


async def _user(node, name: str, serializer: str = "json"):
    return await connect(node.url, serializer, authmethods=["ticket"], authid=name,
                         on_challenge=lambda challenge: f"{name}-ticket")


def _sid(client) -> int:
    return client.welcome.session


async def _events(client, *topics: str) -> defer.DeferredQueue:
    """One queue of (topic, args, kwargs) for all the topics, in arrival order."""
    queue: defer.DeferredQueue = defer.DeferredQueue()
    for topic in topics:
        await client.subscribe(lambda *a, _t=topic, **kw: queue.put((_t, list(a), kw)), topic)
    return queue


async def _next(queue: defer.DeferredQueue):
    return await with_timeout(queue.get())


async def _error(d) -> ApplicationError:
    with pytest.raises(ApplicationError) as e:
        await with_timeout(d)
    return e.value


# -- announcement --------------------------------------------------------------------------------
@ensure
async def test_welcome_announces_the_meta_features_per_role(node, serializer):
    peer = await raw_connect(node.url, serializer)
    welcome = await peer.hello()
    assert welcome[0] == 2
    broker = welcome[2]["roles"]["broker"]["features"]
    dealer = welcome[2]["roles"]["dealer"]["features"]
    assert broker["session_meta_api"] is True and broker["subscription_meta_api"] is True
    assert dealer["session_meta_api"] is True and dealer["registration_meta_api"] is True
    assert dealer["testament_meta_api"] is True
    assert "registration_meta_api" not in broker and "subscription_meta_api" not in dealer


# -- wamp.session.* procedures -----------------------------------------------------------------
@ensure
async def test_session_count_list_and_get(node, serializer):
    a, b, c = [await connect(node.url, serializer) for _ in range(3)]
    assert await a.call("wamp.session.count") == 3
    assert sorted(await a.call("wamp.session.list")) == sorted(_sid(x) for x in (a, b, c))
    details = await a.call("wamp.session.get", _sid(b))
    assert details["session"] == _sid(b)
    assert (details["authid"], details["authrole"], details["authmethod"]) == (
        b.welcome.authid, "anonymous", "anonymous")
    assert details["authprovider"] == b.welcome.authprovider
    assert details["transport"]["peername"].startswith("tcp4:127.0.0.1:")
    b.disconnect()
    await with_timeout(b.disconnected)
    await sleep(0.05)
    assert await a.call("wamp.session.count") == 2
    assert _sid(b) not in await a.call("wamp.session.list")


@ensure
async def test_session_count_and_list_filter_by_authrole(make_spread, serializer):
    node = await make_spread(**_realm())
    alice, bob, carol = [await _user(node, n, serializer) for n in ("alice", "bob", "carol")]
    anon = await connect(node.url, serializer)
    assert await anon.call("wamp.session.count") == 4
    assert await anon.call("wamp.session.count", ["user"]) == 2
    assert await anon.call("wamp.session.count", ["user", "admin"]) == 3
    assert await anon.call("wamp.session.count", []) == 0
    assert sorted(await anon.call("wamp.session.list", ["user"])) == sorted([_sid(alice), _sid(bob)])
    assert await anon.call("wamp.session.list", ["admin", "admin"]) == [_sid(carol)]
    assert await anon.call("wamp.session.list", ["nobody"]) == []
    assert (await _error(anon.call("wamp.session.count", "user"))).error == "wamp.error.invalid_argument"
    assert (await _error(anon.call("wamp.session.list", [1]))).error == "wamp.error.invalid_argument"


@ensure
async def test_sessions_of_another_realm_are_invisible(make_spread, serializer):
    config = _realm()
    config["realms"].append({"uri": "realm2", "auth": {"anonymous": True}})
    node = await make_spread(**config)
    here = await connect(node.url, serializer)
    there = await connect(node.url, serializer, realm="realm2")
    assert await here.call("wamp.session.count") == 1
    assert await here.call("wamp.session.list") == [_sid(here)]
    e = await _error(here.call("wamp.session.get", _sid(there)))
    assert e.error == "wamp.error.no_such_session"
    e = await _error(here.call("wamp.session.kill", _sid(there)))
    assert e.error == "wamp.error.no_such_session"
    assert await there.call("wamp.session.count") == 1


@ensure
async def test_session_errors(node, serializer):
    a = await connect(node.url, serializer)
    b = await connect(node.url, serializer)
    assert (await _error(a.call("wamp.session.get", 42))).error == "wamp.error.no_such_session"
    assert (await _error(a.call("wamp.session.kill", 42))).error == "wamp.error.no_such_session"
    # The spec: killing one's own session is "no *other* session with that id".
    assert (await _error(a.call("wamp.session.kill", _sid(a)))).error == "wamp.error.no_such_session"
    for bad in (a.call("wamp.session.get"), a.call("wamp.session.get", "x"), a.call("wamp.session.get", True),
                a.call("wamp.session.kill", -1), a.call("wamp.session.kill_by_authid", 7),
                a.call("wamp.session.kill_by_authrole"),
                a.call("wamp.session.kill", _sid(b), message=5)):
        assert (await _error(bad)).error == "wamp.error.invalid_argument"
    for bad in (a.call("wamp.session.kill", _sid(b), reason="not a uri"),
                a.call("wamp.session.kill_all", reason=""), a.call("wamp.session.kill_by_authid", "x", reason=3)):
        assert (await _error(bad)).error == "wamp.error.invalid_uri"
    assert await a.call("wamp.session.count") == 2  # nobody was killed by a bad call
    assert (await _error(a.call("wamp.session.nothing"))).error == "wamp.error.no_such_procedure"


# -- killing ---------------------------------------------------------------------------------------
@ensure
async def test_kill_sends_goodbye_with_reason_and_message(node, serializer):
    killer = await connect(node.url, serializer)
    victim = await connect(node.url, serializer)
    result = await killer.call("wamp.session.kill", _sid(victim), reason="com.example.kicked",
                               message="you were kicked")
    assert result is None  # the spec: no result
    details = await with_timeout(victim.left)
    assert (details.reason, details.message) == ("com.example.kicked", "you were kicked")
    assert await killer.call("wamp.session.list") == [_sid(killer)]


@ensure
async def test_kill_reason_defaults_to_the_specs(node, serializer):
    killer = await connect(node.url, serializer)
    victim = await connect(node.url, serializer)
    await killer.call("wamp.session.kill", _sid(victim))
    details = await with_timeout(victim.left)
    assert details.reason == meta.KILL_REASON == "wamp.close.normal"
    assert details.message is None


@ensure
async def test_kill_by_authid_closes_all_its_sessions_but_the_callers(make_spread, serializer):
    node = await make_spread(**_realm())
    alice1, alice2, alice3 = [await _user(node, "alice", serializer) for _ in range(3)]
    bob = await _user(node, "bob", serializer)
    n = await alice1.call("wamp.session.kill_by_authid", "alice", reason="com.example.logout", message="elsewhere")
    assert n == 2
    for c in (alice2, alice3):
        details = await with_timeout(c.left)
        assert (details.reason, details.message) == ("com.example.logout", "elsewhere")
    assert sorted(await alice1.call("wamp.session.list")) == sorted([_sid(alice1), _sid(bob)])
    assert await bob.call("wamp.session.kill_by_authid", "nobody") == 0


@ensure
async def test_kill_by_authrole_closes_the_role_but_not_the_caller(make_spread, serializer):
    node = await make_spread(**_realm())
    alice, bob = await _user(node, "alice", serializer), await _user(node, "bob", serializer)
    carol = await _user(node, "carol", serializer)
    assert await alice.call("wamp.session.kill_by_authrole", "user", reason="com.example.role_revoked") == 1
    assert (await with_timeout(bob.left)).reason == "com.example.role_revoked"
    assert sorted(await carol.call("wamp.session.list")) == sorted([_sid(alice), _sid(carol)])
    assert await carol.call("wamp.session.kill_by_authrole", "admin") == 0  # only the caller has it


@ensure
async def test_kill_all_closes_everyone_else(node, serializer):
    caller = await connect(node.url, serializer)
    others = [await connect(node.url, serializer) for _ in range(3)]
    n = await caller.call("wamp.session.kill_all", reason="com.example.maintenance", message="back soon")
    assert n == 3
    for c in others:
        details = await with_timeout(c.left)
        assert (details.reason, details.message) == ("com.example.maintenance", "back soon")
    assert await caller.call("wamp.session.list") == [_sid(caller)]
    assert await caller.call("wamp.session.kill_all") == 0


@ensure
async def test_meta_procedures_obey_authorization(make_spread, serializer):
    node = await make_spread(**_realm())
    mute = await _user(node, "mute", serializer)
    other = await connect(node.url, serializer)
    for call in (mute.call("wamp.session.count"), mute.call("wamp.session.kill", _sid(other))):
        assert (await _error(call)).error == "wamp.error.not_authorized"
    assert await other.call("wamp.session.count") == 2  # still there


# -- wamp.session.on_join / on_leave ---------------------------------------------------------------
@ensure
async def test_session_join_and_leave_events(make_spread, serializer):
    node = await make_spread(**_realm())
    watcher = await connect(node.url, serializer)
    events = await _events(watcher, "wamp.session.on_join", "wamp.session.on_leave")
    alice = await _user(node, "alice", serializer)
    topic, args, _ = await _next(events)
    assert topic == "wamp.session.on_join" and len(args) == 1
    details = args[0]
    assert details["session"] == _sid(alice)
    assert (details["authid"], details["authrole"], details["authmethod"], details["authprovider"]) == (
        "alice", "user", "ticket", "static")
    assert "peername" in details["transport"]
    alice.leave()
    assert await _next(events) == ("wamp.session.on_leave", [_sid(alice), "alice", "user"], {})
    peer = await raw_connect(node.url, serializer)
    sid = (await peer.hello())[1]
    joined = (await _next(events))[1][0]
    assert joined["session"] == sid
    peer.drop()  # an abrupt TCP drop fires on_leave too
    assert await _next(events) == ("wamp.session.on_leave", [sid, joined["authid"], "anonymous"], {})


@ensure
async def test_the_meta_api_sees_a_session_from_on_join_until_on_leave(node, serializer):
    """What a watcher hears agrees with what it reads: after on_join the session is counted, listed and
    found; after on_leave it is none of these (spread: the watcher and the session on different nodes)."""
    watcher = await connect(node.url, serializer)
    events = await _events(watcher, "wamp.session.on_join", "wamp.session.on_leave")
    for _ in range(10):
        subject = await connect(node.url, serializer)
        topic, args, _ = await _next(events)
        assert topic == "wamp.session.on_join" and args[0]["session"] == _sid(subject)
        assert (await watcher.call("wamp.session.get", _sid(subject)))["session"] == _sid(subject)
        assert await watcher.call("wamp.session.count") == 2
        assert sorted(await watcher.call("wamp.session.list")) == sorted([_sid(watcher), _sid(subject)])
        subject.leave()
        topic, args, _ = await _next(events)
        assert (topic, args[0]) == ("wamp.session.on_leave", _sid(subject))
        assert (await _error(watcher.call("wamp.session.get", _sid(subject)))).error == "wamp.error.no_such_session"
        assert await watcher.call("wamp.session.list") == [_sid(watcher)]


# -- wamp.registration.* ---------------------------------------------------------------------------
@ensure
async def test_registration_procedures(node, serializer):
    callee = await connect(node.url, serializer)
    asker = await connect(node.url, serializer)
    reg = await callee.register(lambda: None, "com.example.proc")
    lists = await asker.call("wamp.registration.list")
    assert lists == {"exact": [reg.id], "prefix": [], "wildcard": []}
    assert await asker.call("wamp.registration.lookup", "com.example.proc") == reg.id
    assert await asker.call("wamp.registration.lookup", "com.example.proc", {"match": "exact"}) == reg.id
    assert await asker.call("wamp.registration.lookup", "com.example.proc", {"match": "prefix"}) is None
    assert await asker.call("wamp.registration.lookup", "com.example.none") is None
    assert await asker.call("wamp.registration.match", "com.example.proc") == reg.id
    assert await asker.call("wamp.registration.match", "com.example.none") is None
    got = await asker.call("wamp.registration.get", reg.id)
    assert (got["id"], got["uri"], got["match"], got["invoke"]) == (reg.id, "com.example.proc", "exact", "single")
    assert got["created"].endswith("Z") and "T" in got["created"]
    assert await asker.call("wamp.registration.list_callees", reg.id) == [_sid(callee)]
    assert await asker.call("wamp.registration.count_callees", reg.id) == 1
    await reg.unregister()
    assert await asker.call("wamp.registration.list") == {"exact": [], "prefix": [], "wildcard": []}
    for proc in ("get", "list_callees", "count_callees"):
        e = await _error(asker.call(f"wamp.registration.{proc}", reg.id))
        assert e.error == "wamp.error.no_such_registration", proc
        e = await _error(asker.call(f"wamp.registration.{proc}", "x"))
        assert e.error == "wamp.error.invalid_argument", proc
    for bad in (asker.call("wamp.registration.lookup"), asker.call("wamp.registration.lookup", "a", "b"),
                asker.call("wamp.registration.lookup", "a", {"match": "regex"}),
                asker.call("wamp.registration.match", 1)):
        assert (await _error(bad)).error == "wamp.error.invalid_argument"


@ensure
async def test_registration_events(node, serializer):
    watcher = await connect(node.url, serializer)
    events = await _events(watcher, "wamp.registration.on_create", "wamp.registration.on_register",
                           "wamp.registration.on_unregister", "wamp.registration.on_delete")
    callee = await connect(node.url, serializer)
    reg = await callee.register(lambda: None, "com.example.proc")
    topic, args, _ = await _next(events)
    assert topic == "wamp.registration.on_create" and args[0] == _sid(callee)
    assert (args[1]["id"], args[1]["uri"], args[1]["match"]) == (reg.id, "com.example.proc", "exact")
    assert await _next(events) == ("wamp.registration.on_register", [_sid(callee), reg.id], {})
    await reg.unregister()
    assert await _next(events) == ("wamp.registration.on_unregister", [_sid(callee), reg.id], {})
    assert await _next(events) == ("wamp.registration.on_delete", [_sid(callee), reg.id], {})
    # A callee that vanishes: the events carry its session id (not null, as Crossbar once sent).
    reg2 = await callee.register(lambda: None, "com.example.other")
    assert (await _next(events))[0] == "wamp.registration.on_create"
    assert (await _next(events))[0] == "wamp.registration.on_register"
    callee.disconnect()
    assert await _next(events) == ("wamp.registration.on_unregister", [_sid(callee), reg2.id], {})
    assert await _next(events) == ("wamp.registration.on_delete", [_sid(callee), reg2.id], {})


# -- wamp.subscription.* ---------------------------------------------------------------------------
@ensure
async def test_subscription_procedures(node, serializer):
    s1, s2 = await connect(node.url, serializer), await connect(node.url, serializer)
    asker = await connect(node.url, serializer)
    await asker.subscribe(lambda *a: None, "wamp.session.on_join")  # router-internal: never shown
    sub = await s1.subscribe(lambda *a: None, "com.example.topic")
    sub2 = await s2.subscribe(lambda *a: None, "com.example.topic")
    assert sub.id == sub2.id
    assert await asker.call("wamp.subscription.list") == {"exact": [sub.id], "prefix": [], "wildcard": []}
    assert await asker.call("wamp.subscription.lookup", "com.example.topic") == sub.id
    assert await asker.call("wamp.subscription.lookup", "com.example.topic", {"match": "wildcard"}) is None
    assert await asker.call("wamp.subscription.lookup", "com.example.none") is None
    assert await asker.call("wamp.subscription.lookup", "wamp.session.on_join") is None
    assert await asker.call("wamp.subscription.match", "com.example.topic") == [sub.id]
    assert await asker.call("wamp.subscription.match", "com.example.none") is None
    got = await asker.call("wamp.subscription.get", sub.id)
    assert (got["id"], got["uri"], got["match"]) == (sub.id, "com.example.topic", "exact")
    assert got["created"].endswith("Z")
    assert sorted(await asker.call("wamp.subscription.list_subscribers", sub.id)) == sorted([_sid(s1), _sid(s2)])
    assert await asker.call("wamp.subscription.count_subscribers", sub.id) == 2
    await sub.unsubscribe()
    assert await asker.call("wamp.subscription.list_subscribers", sub.id) == [_sid(s2)]
    assert await asker.call("wamp.subscription.count_subscribers", sub.id) == 1
    await sub2.unsubscribe()
    for proc in ("get", "list_subscribers", "count_subscribers"):
        e = await _error(asker.call(f"wamp.subscription.{proc}", sub.id))
        assert e.error == "wamp.error.no_such_subscription", proc
        e = await _error(asker.call(f"wamp.subscription.{proc}", None))
        assert e.error == "wamp.error.invalid_argument", proc
    for bad in (asker.call("wamp.subscription.lookup", 3), asker.call("wamp.subscription.match"),
                asker.call("wamp.subscription.lookup", "a", {"match": "fuzzy"})):
        assert (await _error(bad)).error == "wamp.error.invalid_argument"


@ensure
async def test_subscription_events(node, serializer):
    watcher = await connect(node.url, serializer)
    events = await _events(watcher, "wamp.subscription.on_create", "wamp.subscription.on_subscribe",
                           "wamp.subscription.on_unsubscribe", "wamp.subscription.on_delete")
    s1, s2 = await connect(node.url, serializer), await connect(node.url, serializer)
    sub = await s1.subscribe(lambda *a: None, "com.example.topic")
    topic, args, _ = await _next(events)
    assert topic == "wamp.subscription.on_create" and args[0] == _sid(s1)
    assert (args[1]["id"], args[1]["uri"], args[1]["match"]) == (sub.id, "com.example.topic", "exact")
    assert await _next(events) == ("wamp.subscription.on_subscribe", [_sid(s1), sub.id], {})
    await s2.subscribe(lambda *a: None, "com.example.topic")  # joins the subscription: no on_create
    assert await _next(events) == ("wamp.subscription.on_subscribe", [_sid(s2), sub.id], {})
    await sub.unsubscribe()  # someone is left: no on_delete
    assert await _next(events) == ("wamp.subscription.on_unsubscribe", [_sid(s1), sub.id], {})
    s2.disconnect()  # the last subscriber goes without unsubscribing
    assert await _next(events) == ("wamp.subscription.on_unsubscribe", [_sid(s2), sub.id], {})
    assert await _next(events) == ("wamp.subscription.on_delete", [_sid(s2), sub.id], {})
    # Subscriptions to the meta topics themselves make no meta events; the next event is s1's.
    await s1.subscribe(lambda *a: None, "wamp.session.on_leave")
    await s1.subscribe(lambda *a: None, "com.example.next")
    assert (await _next(events))[1][1]["uri"] == "com.example.next"


@ensure
async def test_subscription_procedures_with_patterns(node, serializer):
    s1, s2 = await connect(node.url, serializer), await connect(node.url, serializer)
    asker = await connect(node.url, serializer)
    exact = await s1.subscribe(lambda *a: None, "com.example.topic")
    prefix = await s1.subscribe(lambda *a: None, "com.example.", options=SubscribeOptions(match="prefix"))
    prefix2 = await s2.subscribe(lambda *a: None, "com.example.", options=SubscribeOptions(match="prefix"))
    wildcard = await s2.subscribe(lambda *a: None, "com..topic", options=SubscribeOptions(match="wildcard"))
    await asker.subscribe(lambda *a: None, "wamp.session.", options=SubscribeOptions(match="prefix"))  # internal
    assert prefix.id == prefix2.id and len({exact.id, prefix.id, wildcard.id}) == 3
    assert await asker.call("wamp.subscription.list") == {"exact": [exact.id], "prefix": [prefix.id],
                                                          "wildcard": [wildcard.id]}
    assert await asker.call("wamp.subscription.lookup", "com.example.", {"match": "prefix"}) == prefix.id
    assert await asker.call("wamp.subscription.lookup", "com..topic", {"match": "wildcard"}) == wildcard.id
    assert await asker.call("wamp.subscription.lookup", "com..topic", {"match": "prefix"}) is None
    assert await asker.call("wamp.subscription.lookup", "com.example.") is None  # exact by default
    assert await asker.call("wamp.subscription.lookup", "wamp.session.", {"match": "prefix"}) is None
    assert sorted(await asker.call("wamp.subscription.match", "com.example.topic")) == sorted(
        [exact.id, prefix.id, wildcard.id])
    assert await asker.call("wamp.subscription.match", "com.example.other") == [prefix.id]
    assert await asker.call("wamp.subscription.match", "com.other.topic") == [wildcard.id]
    assert await asker.call("wamp.subscription.match", "org.example") is None
    assert await asker.call("wamp.subscription.match", "wamp.session.on_join") is None  # internal: not shown
    got = await asker.call("wamp.subscription.get", wildcard.id)
    assert (got["id"], got["uri"], got["match"]) == (wildcard.id, "com..topic", "wildcard")
    assert (await asker.call("wamp.subscription.get", prefix.id))["match"] == "prefix"
    assert sorted(await asker.call("wamp.subscription.list_subscribers", prefix.id)) == sorted([_sid(s1), _sid(s2)])
    assert await asker.call("wamp.subscription.count_subscribers", prefix.id) == 2
    await prefix.unsubscribe()
    await prefix2.unsubscribe()
    assert await asker.call("wamp.subscription.list") == {"exact": [exact.id], "prefix": [],
                                                          "wildcard": [wildcard.id]}
    assert await asker.call("wamp.subscription.lookup", "com.example.", {"match": "prefix"}) is None
    e = await _error(asker.call("wamp.subscription.get", prefix.id))
    assert e.error == "wamp.error.no_such_subscription"


@ensure
async def test_subscription_events_for_pattern_subscriptions(node, serializer):
    watcher = await connect(node.url, serializer)
    events = await _events(watcher, "wamp.subscription.on_create", "wamp.subscription.on_subscribe",
                           "wamp.subscription.on_unsubscribe", "wamp.subscription.on_delete")
    client = await connect(node.url, serializer)
    sub = await client.subscribe(lambda *a: None, "com..news", options=SubscribeOptions(match="wildcard"))
    topic, args, _ = await _next(events)
    assert topic == "wamp.subscription.on_create" and args[0] == _sid(client)
    assert (args[1]["id"], args[1]["uri"], args[1]["match"]) == (sub.id, "com..news", "wildcard")
    assert await _next(events) == ("wamp.subscription.on_subscribe", [_sid(client), sub.id], {})
    await sub.unsubscribe()
    assert await _next(events) == ("wamp.subscription.on_unsubscribe", [_sid(client), sub.id], {})
    assert await _next(events) == ("wamp.subscription.on_delete", [_sid(client), sub.id], {})


# -- testaments ------------------------------------------------------------------------------------
@ensure
async def test_testament_fires_on_abrupt_disconnect(node, serializer):
    watcher = await connect(node.url, serializer)
    events = await _events(watcher, "com.example.will")
    peer = await raw_connect(node.url, serializer)
    await peer.hello()
    peer.send([48, 1, {}, "wamp.session.add_testament", ["com.example.will", ["gone", 1], {"why": "crash"}]])
    assert await peer.recv() == [50, 1, {}]  # the spec: no result
    peer.drop()
    assert await _next(events) == ("com.example.will", ["gone", 1], {"why": "crash"})


@ensure
async def test_testament_fires_on_client_disconnect_and_in_order(node, serializer):
    watcher = await connect(node.url, serializer)
    events = await _events(watcher, "com.example.will", "wamp.session.on_leave")
    client = await connect(node.url, serializer)
    await client.call("wamp.session.add_testament", "com.example.will", ["destroyed-1"], {})
    await client.call("wamp.session.add_testament", "com.example.will", ["detached"], {}, scope="detached")
    await client.call("wamp.session.add_testament", "com.example.will", ["destroyed-2"], {}, scope="destroyed",
                      publish_options={"acknowledge": True})
    client.disconnect()
    # The spec: detached-scope testaments first, each scope in the order added; then on_leave.
    assert await _next(events) == ("com.example.will", ["detached"], {})
    assert await _next(events) == ("com.example.will", ["destroyed-1"], {})
    assert await _next(events) == ("com.example.will", ["destroyed-2"], {})
    assert (await _next(events))[0] == "wamp.session.on_leave"


@ensure
async def test_testament_disclose_me_names_the_departed_session(node, serializer):
    watcher = await connect(node.url, serializer)
    queue: defer.DeferredQueue = defer.DeferredQueue()
    await watcher.subscribe(lambda details: queue.put(details), "com.example.will",
                            options=SubscribeOptions(details_arg="details"))
    client = await connect(node.url, serializer)
    await client.call("wamp.session.add_testament", "com.example.will", [], {},
                      publish_options={"disclose_me": True})
    client.leave()
    details = await _next(queue)
    assert details.publisher == _sid(client)


@ensure
async def test_flush_testaments_by_scope(node, serializer):
    watcher = await connect(node.url, serializer)
    events = await _events(watcher, "com.example.will", "wamp.session.on_leave")
    client = await connect(node.url, serializer)
    await client.call("wamp.session.add_testament", "com.example.will", ["a"], {})
    await client.call("wamp.session.add_testament", "com.example.will", ["b"], {}, scope="destroyed")
    await client.call("wamp.session.add_testament", "com.example.will", ["kept"], {}, scope="detached")
    assert await client.call("wamp.session.flush_testaments") is None  # default scope: destroyed
    await client.call("wamp.session.flush_testaments", scope="destroyed")  # nothing left there: harmless
    realm = node.realm_router("realm1")
    assert realm.meta.testaments(_sid(client)) == 1
    client.leave()
    assert await _next(events) == ("com.example.will", ["kept"], {})
    assert (await _next(events))[0] == "wamp.session.on_leave"  # "a" and "b" were flushed

    other = await connect(node.url, serializer)
    await other.call("wamp.session.add_testament", "com.example.will", ["x"], {}, scope="detached")
    await other.call("wamp.session.flush_testaments", scope="detached")
    other.disconnect()
    assert (await _next(events))[0] == "wamp.session.on_leave"
    assert realm.meta.testaments(_sid(other)) == 0


@ensure
async def test_testament_errors(make_spread, serializer):
    node = await make_spread(**_realm())
    client = await connect(node.url, serializer)
    cases = [
        (client.call("wamp.session.add_testament"), "wamp.error.invalid_argument"),
        (client.call("wamp.session.add_testament", 5, [], {}), "wamp.error.invalid_argument"),
        (client.call("wamp.session.add_testament", "com.example.t", "args", {}), "wamp.error.invalid_argument"),
        (client.call("wamp.session.add_testament", "com.example.t", [], [1]), "wamp.error.invalid_argument"),
        (client.call("wamp.session.add_testament", "com.example.t", [], {}, scope="forever"),
         "wamp.error.invalid_argument"),
        (client.call("wamp.session.add_testament", "com.example.t", [], {}, publish_options=[1]),
         "wamp.error.invalid_argument"),
        (client.call("wamp.session.flush_testaments", scope="nope"), "wamp.error.invalid_argument"),
        (client.call("wamp.session.add_testament", "wamp.session.on_leave", [], {}), "wamp.error.invalid_uri"),
        (client.call("wamp.session.add_testament", "not a uri", [], {}), "wamp.error.invalid_uri"),
    ]
    for call, uri in cases:
        assert (await _error(call)).error == uri
    assert node.table.lookup(_sid(client)).realm.meta.testaments(_sid(client)) == 0
    limited = await _user(node, "lima", serializer)  # may call, may not publish
    e = await _error(limited.call("wamp.session.add_testament", "com.example.t", [], {}))
    assert e.error == "wamp.error.not_authorized"


@ensure
async def test_testaments_per_session_are_bounded(node):
    client = await connect(node.url)
    meta_api = node.table.lookup(_sid(client)).realm.meta  # the client's node's (spread: either)
    for i in range(meta.MAX_TESTAMENTS):
        await client.call("wamp.session.add_testament", "com.example.t", [i], {})
    e = await _error(client.call("wamp.session.add_testament", "com.example.t", [], {}))
    assert e.error == meta.TOO_MANY_TESTAMENTS
    await client.call("wamp.session.add_testament", "com.example.t", [], {}, scope="detached")  # per scope
    assert meta_api.testaments(_sid(client)) == meta.MAX_TESTAMENTS + 1
    client.leave()
    await with_timeout(client.disconnected)
    await sleep(0.05)
    assert meta_api._testaments == {}


# -- cost ------------------------------------------------------------------------------------------
@ensure
async def test_clients_still_cannot_register_or_publish_under_wamp(node, serializer):
    client = await connect(node.url, serializer)
    e = await _error(client.register(lambda: None, "wamp.session.count"))
    assert e.error == "wamp.error.invalid_uri"
    assert node.realm_router("realm1").dealer.size() == 0  # the meta procedures are not registrations
    assert await client.call("wamp.session.count") == 1


@ensure
async def test_testament_publish_options_are_those_of_a_publish(node, serializer):
    """Black/whitelists and retention apply to a testament as to the PUBLISH it stands for."""
    chosen, other = await connect(node.url, serializer), await connect(node.url, serializer)
    got_chosen = await _events(chosen, "com.example.will")
    got_other = await _events(other, "com.example.will")
    client = await connect(node.url, serializer)
    await client.call("wamp.session.add_testament", "com.example.will", ["for you"], {},
                      publish_options={"eligible": [_sid(chosen)], "retain": True, "acknowledge": True})
    bad = await _error(client.call("wamp.session.add_testament", "com.example.will", [], {},
                                   publish_options={"eligible": "everyone"}))
    assert bad.error == "wamp.error.invalid_argument"
    client.leave()
    assert await _next(got_chosen) == ("com.example.will", ["for you"], {})
    late: defer.DeferredQueue = defer.DeferredQueue()
    await chosen.subscribe(lambda *a, details: late.put((list(a), details.retained)), "com.example.will",
                           options=SubscribeOptions(get_retained=True, details_arg="details"))
    assert await _next(late) == (["for you"], True)  # retained, and chosen is eligible
    await sleep(0.1)
    assert got_other.pending == []  # not eligible, then or later
