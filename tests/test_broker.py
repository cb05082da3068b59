"""Basic Profile pub/sub over real sockets: SUBSCRIBE, PUBLISH → EVENT, acknowledge, errors (issue 2, point 7)."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from tests.wampclient import connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def node(spread):
    """Every test here runs on one node and on two nodes of a cluster with its clients spread."""
    return spread


async def _collector(client, topic: str):
    q = defer.DeferredQueue()
    sub = await client.subscribe(lambda *a, **kw: q.put((list(a), kw)), topic)
    return q, sub


@ensure
async def test_event_with_args_kwargs_reaches_all_subscribers(node, serializer):
    subs = [await connect(node.url, s) for s in ("json", "msgpack", serializer)]
    queues = [await _collector(c, "com.example.topic") for c in subs]
    publisher = await connect(node.url, serializer)
    pub = await publisher.publish("com.example.topic", 1, "a", b"\x00bin", k={"v": True},
                                  options=PublishOptions(acknowledge=True))
    assert 1 <= pub.id <= 2**53
    for q, _ in queues:
        assert await with_timeout(q.get()) == ([1, "a", b"\x00bin"], {"k": {"v": True}})


@ensure
async def test_one_subscription_id_per_topic(node):
    a = await connect(node.url)
    b = await connect(node.url)
    _, sa = await _collector(a, "com.example.shared")
    _, sb = await _collector(b, "com.example.shared")
    assert sa.id == sb.id
    assert node.realm_router("realm1").broker.size() == 1


@ensure
async def test_publisher_is_excluded_by_default(node, serializer):
    client = await connect(node.url, serializer)
    q, _ = await _collector(client, "com.example.me")
    await client.publish("com.example.me", "excluded", options=PublishOptions(acknowledge=True))
    await client.publish("com.example.me", "included", options=PublishOptions(acknowledge=True, exclude_me=False))
    assert await with_timeout(q.get()) == (["included"], {})
    assert q.pending == []


@ensure
async def test_unacknowledged_publish_gets_no_reply_but_is_delivered(node):
    publisher = await raw_connect(node.url)
    subscriber = await raw_connect(node.url)
    await publisher.hello()
    await subscriber.hello()
    subscriber.send([32, 1, {}, "com.example.t"])
    sub_id = (await subscriber.recv())[2]
    publisher.send([16, 5, {}, "com.example.t", [1]])
    publisher.send([16, 6, {}, "bad uri here", [1]])  # invalid, but no one waits for an answer
    event = await subscriber.recv()
    assert event[0] == 36 and event[1] == sub_id and event[3] == {} and event[4] == [1]
    publisher.send([16, 7, {"acknowledge": True}, "com.example.t"])
    published = await publisher.recv()
    assert published[0] == 17 and published[1] == 7  # the first reply: nothing came for 5 and 6


@ensure
async def test_invalid_topic_uris(node, serializer):
    peer = await raw_connect(node.url, serializer)
    await peer.hello()
    peer.send([32, 1, {}, "com..example"])
    error = await peer.recv()
    assert error[:3] == [8, 32, 1] and error[4] == "wamp.error.invalid_uri"
    peer.send([16, 2, {"acknowledge": True}, "com.example.#bad"])
    error = await peer.recv()
    assert error[:3] == [8, 16, 2] and error[4] == "wamp.error.invalid_uri"
    # the wamp. namespace is the router's: subscribing is fine, publishing is not
    peer.send([16, 3, {"acknowledge": True}, "wamp.session.on_join"])
    error = await peer.recv()
    assert error[:3] == [8, 16, 3] and error[4] == "wamp.error.invalid_uri"
    peer.send([32, 4, {}, "wamp.session.on_join"])
    assert (await peer.recv())[:2] == [33, 4]


@ensure
async def test_unsubscribe_and_no_such_subscription(node, serializer):
    peer = await raw_connect(node.url, serializer)
    await peer.hello()
    peer.send([32, 1, {}, "com.example.u"])
    sub_id = (await peer.recv())[2]
    peer.send([34, 2, sub_id])
    assert await peer.recv() == [35, 2]
    peer.send([34, 3, sub_id])
    error = await peer.recv()
    assert error[:3] == [8, 34, 3] and error[4] == "wamp.error.no_such_subscription"
    assert node.realm_router("realm1").broker.size() == 0


@ensure
async def test_unsubscribed_session_gets_no_more_events(node):
    sub = await connect(node.url)
    pub = await connect(node.url)
    q, subscription = await _collector(sub, "com.example.stop")
    await subscription.unsubscribe()
    await pub.publish("com.example.stop", 1, options=PublishOptions(acknowledge=True))
    await sleep(0.05)
    assert q.pending == []
