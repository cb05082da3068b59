"""The Broker's Advanced Profile over real sockets (issue 7): pattern_based_subscription,
subscriber_blackwhite_listing, publisher_exclusion, event_retention and payload_passthru_mode."""

from __future__ import annotations

import base64

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions
from twisted.internet import defer

from realms.secrets import hash_secret
from router import broker as broker_module
from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def node(spread):
    """The tests here that take `node` run on one node and on two nodes of a cluster, their clients spread."""
    return spread

EVERYTHING = [{"uri": "", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]
USERS = {"alice": "user", "bob": "user", "carol": "admin"}
ACK = PublishOptions(acknowledge=True)
PPT = {"ppt_scheme": "x_courtyard_test", "ppt_serializer": "cbor", "ppt_cipher": "xsalsa20poly1305",
       "ppt_keyid": "0x1234abcd"}
PPT_PUBLISHER = {"publisher": {"features": {"payload_passthru_mode": True}}, "subscriber": {}}


def _users_realm(disclose: bool = False) -> dict:
    """Anonymous sessions plus ticket users alice and bob (role user) and carol (role admin); with
    `disclose`, every role's publications name the publisher (publisher_identification forced by role)."""
    permissions = [{**EVERYTHING[0], "disclose": ["publisher"]}] if disclose else EVERYTHING
    return {"realms": [{
        "uri": "realm1",
        "auth": {"anonymous": True, "ticket": True},
        "users": {name: {"role": role, "ticket": hash_secret(f"{name}-ticket", iterations=1000)}
                  for name, role in USERS.items()},
        "roles": {role: {"permissions": permissions} for role in ("anonymous", "user", "admin")},
    }]}


async def _user(node, name: str, serializer: str):
    return await connect(node.url, serializer, authmethods=["ticket"], authid=name,
                         on_challenge=lambda challenge: f"{name}-ticket")


async def _events(client, topic: str, **options) -> tuple[defer.DeferredQueue, object]:
    """Subscribe; a queue of (args, kwargs, EventDetails) and the subscription."""
    q: defer.DeferredQueue = defer.DeferredQueue()
    sub = await with_timeout(client.subscribe(lambda *a, details, **kw: q.put((list(a), kw, details)), topic,
                                              options=SubscribeOptions(details_arg="details", **options)))
    return q, sub


async def _publish(client, topic: str, *args, **kwargs):
    """An autobahn publish that fails the test instead of hanging when the router never answers."""
    return await with_timeout(client.publish(topic, *args, **kwargs))


async def _until_marker(q: defer.DeferredQueue) -> list:
    """The args of every event before the ["marker"] one: a publication that did not arrive by then
    (sent earlier on the same connection) never will."""
    got = []
    while True:
        args, _, _ = await with_timeout(q.get())
        if args == ["marker"]:
            return got
        got.append(args)


async def _raw(node, serializer: str = "json", roles: dict | None = None):
    """A joined raw peer (optionally announcing the given roles) and its session id."""
    peer = await raw_connect(node.url, serializer)
    peer.send([1, "realm1", {"roles": roles or {"publisher": {}, "subscriber": {}}}])
    welcome = await peer.recv()
    assert welcome[0] == 2, welcome
    return peer, welcome[1]


async def _subscribe(peer, request: int, topic: str, options: dict | None = None) -> int:
    peer.send([32, request, options or {}, topic])
    subscribed = await peer.recv()
    assert subscribed[:2] == [33, request], subscribed
    return subscribed[2]


async def _error(d) -> ApplicationError:
    with pytest.raises(ApplicationError) as e:
        await with_timeout(d)
    return e.value


def _binary(serializer: str, data: bytes):
    """Binary as the raw peer puts it on the wire: bytes for msgpack, WAMP's "\\0" + base64 string for JSON."""
    return data if serializer == "msgpack" else "\x00" + base64.b64encode(data).decode()


# -- announcement ----------------------------------------------------------------------------------
@ensure
async def test_welcome_announces_the_broker_features(node, serializer):
    peer = await raw_connect(node.url, serializer)
    welcome = await peer.hello()
    features = welcome[2]["roles"]["broker"]["features"]
    for name in ("pattern_based_subscription", "subscriber_blackwhite_listing", "publisher_exclusion",
                 "publisher_identification", "event_retention", "payload_passthru_mode"):
        assert features.get(name) is True, name


# -- pattern_based_subscription --------------------------------------------------------------------
@ensure
async def test_prefix_subscription_gets_every_topic_with_that_string_prefix(node, serializer):
    sub = await connect(node.url, serializer)
    pub = await connect(node.url, serializer)
    q, _ = await _events(sub, "com.example.emergency", match="prefix")
    for topic in ("com.example.emergency", "com.example.emergency.11", "com.example.emergency-low",
                  "com.example.emerge", "com.other.emergency", "com.example.emergency.category.severe"):
        await _publish(pub, topic, topic, options=ACK)
    await _publish(pub, "com.example.emergency", "marker", options=ACK)
    got = [await with_timeout(q.get()) for _ in range(4)]
    assert [(args[0], details.topic) for args, _, details in got] == [
        (t, t) for t in ("com.example.emergency", "com.example.emergency.11", "com.example.emergency-low",
                         "com.example.emergency.category.severe")]
    assert await _until_marker(q) == []  # com.example.emerge and com.other.emergency never came


@ensure
async def test_wildcard_subscription_matches_whole_components(node, serializer):
    sub = await connect(node.url, serializer)
    pub = await connect(node.url, serializer)
    q, _ = await _events(sub, "com.myapp..userevent", match="wildcard")
    for topic in ("com.myapp.foo.userevent", "com.myapp.foo.userevent.bar", "com.myapp.foo.user",
                  "com.myapp2.foo.userevent", "com.myapp.bar.userevent"):
        await _publish(pub, topic, topic, options=ACK)
    got = [await with_timeout(q.get()) for _ in range(2)]
    assert [(args, details.topic) for args, _, details in got] == [
        (["com.myapp.foo.userevent"], "com.myapp.foo.userevent"),
        (["com.myapp.bar.userevent"], "com.myapp.bar.userevent")]
    await _publish(pub, "com.myapp.x.userevent", "marker", options=ACK)
    assert await _until_marker(q) == []


@ensure
async def test_one_event_per_matching_subscription_and_topic_only_for_patterns(node, serializer):
    peer, _ = await _raw(node, serializer)
    exact = await _subscribe(peer, 1, "a.b.c")
    prefix = await _subscribe(peer, 2, "a.b", {"match": "prefix"})
    wildcard = await _subscribe(peer, 3, "a..c", {"match": "wildcard"})
    assert len({exact, prefix, wildcard}) == 3
    publisher, _ = await _raw(node, serializer)
    publisher.send([16, 9, {"acknowledge": True}, "a.b.c", [1], {"k": "v"}])
    published = await publisher.recv()
    assert published[:2] == [17, 9]
    events = {}
    for _ in range(3):
        event = await peer.recv()
        assert event[0] == 36 and event[2] == published[2]  # the same publication on each subscription
        assert event[4:] == [[1], {"k": "v"}]
        events[event[1]] = event[3]
    assert events == {exact: {}, prefix: {"topic": "a.b.c"}, wildcard: {"topic": "a.b.c"}}
    publisher.send([16, 10, {"acknowledge": True}, "a.b.x"])  # only the prefix matches
    assert (await publisher.recv())[:2] == [17, 10]
    event = await peer.recv()
    assert event[1] == prefix and event[3] == {"topic": "a.b.x"}


@ensure
async def test_pattern_subscriptions_are_shared_per_topic_and_policy(node, serializer):
    a, b = await connect(node.url, serializer), await connect(node.url, serializer)
    _, sa = await _events(a, "com.shared.", match="prefix")
    _, sb = await _events(b, "com.shared.", match="prefix")
    _, sw = await _events(b, "com.shared.", match="wildcard")
    _, se = await _events(b, "com.shared")
    assert sa.id == sb.id
    assert len({sa.id, sw.id, se.id}) == 3
    broker = node.realm_router("realm1").broker
    assert broker.size() == 3 and broker._patterns == 2
    assert {s.id for s in broker.matching("com.shared.x")} == {sa.id, sw.id}
    for s in (sa, sb, sw, se):
        await with_timeout(s.unsubscribe())
    assert broker.size() == 0 and broker._patterns == 0  # publish is back on the exact dict alone


@ensure
async def test_publisher_exclusion_and_identification_on_pattern_subscriptions(make_node, serializer):
    node = make_node(**_users_realm(disclose=True))
    client = await connect(node.url, serializer)
    q, _ = await _events(client, "com.me.", match="prefix")
    await _publish(client, "com.me.excluded", "no", options=ACK)
    await _publish(client, "com.me.included", "yes", options=PublishOptions(acknowledge=True, exclude_me=False))
    args, _, details = await with_timeout(q.get())
    assert args == ["yes"] and details.topic == "com.me.included"
    assert details.publisher == client.welcome.session and details.publisher_authrole == "anonymous"
    assert q.pending == []


@ensure
async def test_a_vanished_pattern_subscriber_leaves_nothing_behind(node, serializer):
    sub = await connect(node.url, serializer)
    await _events(sub, "com.gone..x", match="wildcard")
    await _events(sub, "com.gone.", match="prefix")
    broker = node.realm_router("realm1").broker
    assert broker._patterns == 2
    sub.disconnect()
    await with_timeout(sub.disconnected)
    for _ in range(200):  # the router learns of the close a moment after the client
        if broker.size() == 0:
            break
        await sleep(0.01)
    assert broker.size() == 0 and broker._patterns == 0 and broker.matching("com.gone.a.x") == []


@ensure
async def test_meta_events_reach_pattern_subscribers(node, serializer):
    watcher = await connect(node.url, serializer)
    q, _ = await _events(watcher, "wamp.session.on_", match="prefix")
    other = await connect(node.url, serializer)
    args, _, details = await with_timeout(q.get())
    assert details.topic == "wamp.session.on_join" and args[0]["session"] == other.welcome.session
    other.leave()
    args, _, details = await with_timeout(q.get())
    assert details.topic == "wamp.session.on_leave" and args[0] == other.welcome.session


@ensure
async def test_subscribe_errors(node, serializer):
    peer, _ = await _raw(node, serializer)
    cases = [
        ({"match": "regex"}, "com.example", "wamp.error.invalid_argument"),
        ({"match": 5}, "com.example", "wamp.error.invalid_argument"),
        ({"get_retained": "yes"}, "com.example", "wamp.error.invalid_argument"),
        ({"match": "prefix"}, "com..example", "wamp.error.invalid_uri"),  # a prefix of no valid URI
        ({"match": "prefix"}, ".com", "wamp.error.invalid_uri"),
        ({"match": "prefix"}, "com.ex ample", "wamp.error.invalid_uri"),
        ({"match": "wildcard"}, "com.#.x", "wamp.error.invalid_uri"),
        ({"match": "wildcard"}, "com. .x", "wamp.error.invalid_uri"),
        ({}, "com.", "wamp.error.invalid_uri"),  # empty components only with a pattern policy
        ({"match": "exact"}, "com..x", "wamp.error.invalid_uri"),
    ]
    for i, (options, topic, uri) in enumerate(cases, start=1):
        peer.send([32, i, options, topic])
        error = await peer.recv()
        assert error[:3] == [8, 32, i] and error[4] == uri, (options, topic, error)
    assert node.realm_router("realm1").broker.size() == 0
    for i, (options, topic) in enumerate([({"match": "prefix"}, "com."), ({"match": "wildcard"}, "com..x"),
                                          ({"match": "prefix"}, "com.ex"), ({"match": "wildcard"}, ".."),
                                          ({"match": "prefix"}, "")], start=100):
        peer.send([32, i, options, topic])
        reply = await peer.recv()
        while reply[0] == 36:  # ".." and "" match wamp.subscription.on_create etc.: the peer hears of itself
            assert reply[3]["topic"].startswith("wamp.subscription.on_")
            reply = await peer.recv()
        assert reply[:2] == [33, i], (options, topic, reply)
    assert node.realm_router("realm1").broker.size() == 5


# -- subscriber_blackwhite_listing -----------------------------------------------------------------
@ensure
async def test_exclude_and_eligible_by_session_id(node, serializer):
    subs = [await connect(node.url, serializer) for _ in range(3)]
    queues = [(await _events(c, "com.bw"))[0] for c in subs]
    a, b, c = (s.welcome.session for s in subs)
    pub = await connect(node.url, serializer)
    await _publish(pub, "com.bw", "eligible a b", options=PublishOptions(acknowledge=True, eligible=[a, b]))
    await _publish(pub, "com.bw", "exclude a", options=PublishOptions(acknowledge=True, exclude=[a]))
    await _publish(pub, "com.bw", "spec example", options=PublishOptions(acknowledge=True, eligible=[a, b, 42],
                                                                       exclude=[a]))
    await _publish(pub, "com.bw", "marker", options=ACK)
    assert await _until_marker(queues[0]) == [["eligible a b"]]
    assert await _until_marker(queues[1]) == [["eligible a b"], ["exclude a"], ["spec example"]]
    assert await _until_marker(queues[2]) == [["exclude a"]]
    assert c not in (a, b)


@ensure
async def test_eligible_and_exclude_by_authid_and_authrole(make_node, serializer):
    node = make_node(**_users_realm())
    clients = {name: await _user(node, name, serializer) for name in USERS}
    clients["anon"] = await connect(node.url, serializer)
    queues = {name: (await _events(c, "com.bw", match="prefix"))[0] for name, c in clients.items()}
    pub = await connect(node.url, serializer)
    publications = [
        ("role user", PublishOptions(eligible_authrole=["user"])),
        ("role user or admin, not bob", PublishOptions(eligible_authrole=["user", "admin"], exclude_authid=["bob"])),
        ("carol or anon", PublishOptions(eligible_authid=["carol", clients["anon"].welcome.authid])),
        ("not role user", PublishOptions(exclude_authrole=["user"])),
        ("alice, but role admin", PublishOptions(eligible_authid=["alice"], eligible_authrole=["admin"])),
        ("nobody", PublishOptions(eligible=[])),
    ]
    for text, options in publications:
        options.acknowledge = True
        await _publish(pub, "com.bw.topic", text, options=options)
    await _publish(pub, "com.bw.topic", "marker", options=ACK)
    got = {name: [args[0] for args in await _until_marker(q)] for name, q in queues.items()}
    assert got == {
        "alice": ["role user", "role user or admin, not bob"],
        "bob": ["role user"],
        "carol": ["role user or admin, not bob", "carol or anon", "not role user"],
        "anon": ["carol or anon", "not role user"],
    }


@ensure
async def test_bad_publish_options_get_invalid_argument_when_acknowledged(node, serializer):
    subscriber, _ = await _raw(node, serializer)
    sub_id = await _subscribe(subscriber, 1, "com.opts")
    peer, _ = await _raw(node, serializer, PPT_PUBLISHER)
    bad = [{"exclude": 5}, {"exclude": ["x"]}, {"eligible": [True]}, {"eligible": [1.5]},
           {"exclude_authid": "alice"}, {"eligible_authid": [1]}, {"exclude_authrole": [None]},
           {"eligible_authrole": {"user": 1}}, {"retain": "yes"}, {"ppt_scheme": 5}, {"ppt_scheme": ""},
           {"ppt_scheme": "mqtt", "ppt_cipher": 3}, {"ppt_keyid": "k"}]
    for i, options in enumerate(bad, start=1):
        peer.send([16, i, {"acknowledge": True, **options}, "com.opts", ["bad"]])
        error = await peer.recv()
        assert error[:3] == [8, 16, i] and error[4] == "wamp.error.invalid_argument", (options, error)
    for i, options in enumerate(bad, start=100):  # unacknowledged: dropped without a word
        peer.send([16, i, options, "com.opts", ["bad"]])
    peer.send([16, 200, {"acknowledge": True}, "com.opts", ["good"]])
    assert (await peer.recv())[:2] == [17, 200]  # the first answer since: nothing came for 100...
    event = await subscriber.recv()
    assert event[1] == sub_id and event[4] == ["good"]  # ...and none of the bad ones was delivered
    assert node.realm_router("realm1").broker.retained() == 0


# -- event_retention -------------------------------------------------------------------------------
@ensure
async def test_retained_event_is_delivered_after_subscribed(node, serializer):
    publisher, _ = await _raw(node, serializer)
    publisher.send([16, 1, {"acknowledge": True, "retain": True}, "com.sensor.temp", ["first"], {"i": 1}])
    publisher.send([16, 2, {"acknowledge": True, "retain": True}, "com.sensor.temp", ["latest"], {"i": 2}])
    publisher.send([16, 3, {"acknowledge": True}, "com.sensor.temp", ["not retained"]])  # keeps the retained one
    latest_publication = [(await publisher.recv())[2] for _ in range(3)][1]
    peer, _ = await _raw(node, serializer)
    peer.send([32, 1, {"get_retained": True}, "com.sensor.temp"])
    subscribed = await peer.recv()
    assert subscribed[:2] == [33, 1]  # SUBSCRIBED first, then the retained event
    event = await peer.recv()
    assert event == [36, subscribed[2], latest_publication, {"retained": True}, ["latest"], {"i": 2}]
    peer.send([32, 2, {}, "com.sensor.temp"])  # without get_retained: nothing
    peer.send([32, 3, {"get_retained": False}, "com.sensor.humidity"])
    assert (await peer.recv())[:2] == [33, 2]
    assert (await peer.recv())[:2] == [33, 3]
    peer.send([32, 4, {"get_retained": True}, "com.sensor.none"])  # nothing retained there
    assert (await peer.recv())[:2] == [33, 4]
    publisher.send([16, 5, {"acknowledge": True}, "com.sensor.temp", ["live"]])
    assert (await peer.recv())[4] == ["live"]  # the next thing to arrive: no stray retained event


@ensure
async def test_retained_events_with_autobahn_and_publisher_disclosed(make_node, serializer):
    node = make_node(**_users_realm(disclose=True))
    pub = await connect(node.url, serializer)
    await _publish(pub, "com.retain.x", 21.5, unit="C", options=PublishOptions(acknowledge=True, retain=True))
    sub = await connect(node.url, serializer)
    q, _ = await _events(sub, "com.retain.x", get_retained=True)
    args, kwargs, details = await with_timeout(q.get())
    assert (args, kwargs) == ([21.5], {"unit": "C"})
    assert details.retained is True and details.publisher == pub.welcome.session
    await _publish(pub, "com.retain.x", 22.0, options=ACK)
    args, _, details = await with_timeout(q.get())
    assert args == [22.0] and not details.retained


@ensure
async def test_pattern_subscription_gets_every_matching_retained_topic(node, serializer):
    pub = await connect(node.url, serializer)
    for topic in ("com.r.a", "com.r.b", "com.s.a", "org.r.a"):
        await _publish(pub, topic, topic, options=PublishOptions(acknowledge=True, retain=True))
    peer, _ = await _raw(node, serializer)
    prefix = await _subscribe(peer, 1, "com.r.", {"match": "prefix", "get_retained": True})
    got = [await peer.recv() for _ in range(2)]
    assert [(e[1], e[3], e[4]) for e in got] == [
        (prefix, {"retained": True, "topic": "com.r.a"}, ["com.r.a"]),
        (prefix, {"retained": True, "topic": "com.r.b"}, ["com.r.b"])]
    wildcard = await _subscribe(peer, 2, "com..a", {"match": "wildcard", "get_retained": True})
    got = [await peer.recv() for _ in range(2)]
    assert [(e[1], e[3]["topic"], e[4]) for e in got] == [(wildcard, "com.r.a", ["com.r.a"]),
                                                         (wildcard, "com.s.a", ["com.s.a"])]
    assert node.realm_router("realm1").broker.retained() == 4


@ensure
async def test_retained_event_respects_the_publishers_lists(make_node, serializer):
    node = make_node(**_users_realm())
    pub = await connect(node.url, serializer)
    await _publish(pub, "com.secret", "admins only",
                      options=PublishOptions(acknowledge=True, retain=True, eligible_authrole=["admin"]))
    anon = await connect(node.url, serializer)
    alice = await _user(node, "alice", serializer)
    carol = await _user(node, "carol", serializer)
    queues = {name: (await _events(c, "com.secret", get_retained=True))[0]
              for name, c in (("anon", anon), ("alice", alice), ("carol", carol))}
    args, _, details = await with_timeout(queues["carol"].get())
    assert args == ["admins only"] and details.retained is True
    # the session id list, as recorded at publish time, counts too
    await _publish(pub, "com.secret2", "not alice",
                      options=PublishOptions(acknowledge=True, retain=True, exclude=[alice.welcome.session]))
    q_alice, _ = await _events(alice, "com.secret2", get_retained=True)
    q_carol, _ = await _events(carol, "com.secret2", get_retained=True)
    assert (await with_timeout(q_carol.get()))[0] == ["not alice"]
    await _publish(pub, "com.secret", "marker", options=ACK)
    await _publish(pub, "com.secret2", "marker", options=ACK)
    assert await _until_marker(queues["anon"]) == []
    assert await _until_marker(queues["alice"]) == []
    assert await _until_marker(q_alice) == []


@ensure
async def test_retained_event_respects_publisher_exclusion(node, serializer):
    pub = await connect(node.url, serializer)
    await _publish(pub, "com.mine", "excluded", options=PublishOptions(acknowledge=True, retain=True))
    q, _ = await _events(pub, "com.mine", get_retained=True)
    other = await connect(node.url, serializer)
    q_other, _ = await _events(other, "com.mine", get_retained=True)
    assert (await with_timeout(q_other.get()))[0] == ["excluded"]  # others get it
    await _publish(pub, "com.mine", "included", options=PublishOptions(acknowledge=True, retain=True, exclude_me=False))
    assert (await with_timeout(q.get()))[0] == ["included"]  # live, as it was published
    q2, _ = await _events(pub, "com.mine", match="prefix", get_retained=True)
    args, _, details = await with_timeout(q2.get())
    assert args == ["included"] and details.retained is True and details.topic == "com.mine"


@ensure
async def test_retained_topics_per_realm_are_bounded(node, serializer, monkeypatch):
    monkeypatch.setattr(broker_module, "MAX_RETAINED", 3)
    pub = await connect(node.url, serializer)
    for topic in ("com.b.1", "com.b.2", "com.b.3"):
        await _publish(pub, topic, topic, options=PublishOptions(acknowledge=True, retain=True))
    await _publish(pub, "com.b.1", "again", options=PublishOptions(acknowledge=True, retain=True))  # now the newest
    await _publish(pub, "com.b.4", "com.b.4", options=PublishOptions(acknowledge=True, retain=True))  # evicts com.b.2
    broker = node.realm_router("realm1").broker
    assert broker.retained() == 3
    peer, _ = await _raw(node, serializer)
    await _subscribe(peer, 1, "com.b.", {"match": "prefix", "get_retained": True})
    got = [(await peer.recv())[4] for _ in range(3)]
    assert got == [["com.b.3"], ["again"], ["com.b.4"]]


# -- payload_passthru_mode -------------------------------------------------------------------------
@ensure
async def test_ppt_options_are_forwarded_and_the_payload_untouched(node, serializer):
    subscriber, _ = await _raw(node, serializer)
    exact = await _subscribe(subscriber, 1, "com.ppt.topic")
    prefix = await _subscribe(subscriber, 2, "com.ppt.", {"match": "prefix"})
    publisher, _ = await _raw(node, serializer, PPT_PUBLISHER)
    payload = _binary(serializer, b"\x00\x01 opaque, encrypted \xff")
    publisher.send([16, 1, {"acknowledge": True, "retain": True, **PPT}, "com.ppt.topic", [payload]])
    publication = (await publisher.recv())[2]
    events = {e[1]: e for e in [await subscriber.recv(), await subscriber.recv()]}
    assert events[exact] == [36, exact, publication, PPT, [payload]]
    assert events[prefix] == [36, prefix, publication, {**PPT, "topic": "com.ppt.topic"}, [payload]]
    # only ppt_scheme is required; the retained event carries the options too
    publisher.send([16, 2, {"acknowledge": True, "ppt_scheme": "mqtt"}, "com.ppt.topic", [payload]])
    await publisher.recv()
    assert (await subscriber.recv())[3:] == [{"ppt_scheme": "mqtt"}, [payload]]
    await subscriber.recv()
    late, _ = await _raw(node, serializer)
    sub_id = await _subscribe(late, 1, "com.ppt.topic", {"get_retained": True})
    assert await late.recv() == [36, sub_id, publication, {**PPT, "retained": True}, [payload]]


@ensure
async def test_ppt_from_a_publisher_that_did_not_announce_it_is_a_protocol_violation(node, serializer):
    peer, _ = await _raw(node, serializer)  # announces publisher without payload_passthru_mode
    peer.send([16, 1, {"acknowledge": True, "ppt_scheme": "mqtt"}, "com.ppt.topic", [_binary(serializer, b"x")]])
    abort = await peer.recv()
    assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation"
    await with_timeout(peer.closed)


# -- other transports and serializers --------------------------------------------------------------
@ensure
async def test_patterns_and_retention_over_rawsocket_and_cbor(make_node):
    node = make_node(listeners=[{}, {"type": "rawsocket"}])
    rs = f"rs://127.0.0.1:{node.ports[1].getHost().port}"
    pub = await connect(node.url, "cbor")
    await _publish(pub, "com.rs.kept", b"\x00raw", options=PublishOptions(acknowledge=True, retain=True))
    queues = []
    for serializer in ("cbor", "msgpack", "json"):
        sub = await connect(rs, serializer)
        queues.append((await _events(sub, "com.rs.", match="prefix", get_retained=True))[0])
    await _publish(pub, "com.rs.live", {"n": 1}, options=ACK)
    for q in queues:
        args, _, details = await with_timeout(q.get())
        assert (args, details.topic, details.retained) == ([b"\x00raw"], "com.rs.kept", True)
        args, _, details = await with_timeout(q.get())
        assert (args, details.topic, bool(details.retained)) == ([{"n": 1}], "com.rs.live", False)
