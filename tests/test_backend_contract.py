"""One routing core over two backends (issue 20, item 5): the same suite runs against the local backend
(one node) and the Redis backend (two in-process nodes on a real redis-server), the Centrifuge way: a
factory per backend. The peers are in memory (the Nexus way: a test peer that records what the router
sends it), so these tests see exactly what broker and dealer send, with no socket in between; the
end-to-end tests over real sockets are in test_one_router.py and the broker/dealer/meta modules."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep

from router import wamp
from tests.helpers.cluster import cluster_config
from tests.helpers.nodes import start_cluster_node, start_node, stop_node

ensure = pytest_twisted.ensureDeferred
ROLES = {"caller": {}, "callee": {}, "publisher": {}, "subscriber": {}}


class MemoryCodec:
    """What a transport's codec does for EVENTs (frame once, send to many), without bytes."""

    class serializer:  # noqa: N801 (shaped like Serializer, for the broker's log line)
        name = "memory"

    @staticmethod
    def prepare(msg: list) -> list:
        return msg


class MemoryPeer:
    """A session's transport that keeps what the router sends it."""

    codec = MemoryCodec()

    def __init__(self) -> None:
        self.inbox: list[list] = []

    def send(self, msg: list, bulk: bool = False) -> None:
        self.inbox.append(msg)

    def send_prepared(self, frame: list) -> None:
        self.inbox.append(frame)

    def close(self, reason: str = "", message: str | None = None) -> None:
        self.inbox.append([wamp.GOODBYE, {}, reason])

    def abort(self, reason: str, message: str) -> None:
        self.inbox.append([wamp.ABORT, {"message": message}, reason])

    async def next(self, code: int, seconds: float = 5.0) -> list:
        """The first message of this type not taken yet (others stay)."""
        for _ in range(int(seconds / 0.01)):
            for i, msg in enumerate(self.inbox):
                if msg[0] == code:
                    return self.inbox.pop(i)
            await sleep(0.01)
        raise AssertionError(f"no message {code} within {seconds}s; got {self.inbox}")

    def has(self, code: int) -> bool:
        return any(m[0] == code for m in self.inbox)


class Place:
    """One node's realm1, where a test opens in-memory sessions and sends them messages."""

    def __init__(self, node) -> None:
        self.node = node
        self.realm = node.realm_router("realm1")
        self.opened: list = []

    def join(self) -> tuple:
        peer = MemoryPeer()
        session = self.node.table.open("realm1", peer, peer=None, agent="memory", roles=ROLES, authid="memory",
                                       authrole="anonymous", authmethod="anonymous", authprovider="static",
                                       realm=self.realm)
        self.realm.attach(session)
        self.opened.append(session)
        return session, peer

    def leave_all(self) -> None:
        for session in self.opened:
            self.node.table.close(session.id, "test over")

    def send(self, session, msg: list) -> None:
        self.realm.handlers[msg[0]](session, msg)


@pytest.fixture(params=["local", "redis"])
def places(request):
    """(place A, place B): one node's realm twice for the local backend, two nodes' for the Redis one."""
    if request.param == "local":
        node = start_node()
        a, b = Place(node), Place(node)
        yield a, b
        a.leave_all()
        b.leave_all()
        stop_node(node)
        return
    redis = request.getfixturevalue("redis_server")
    nodes = [pytest_twisted.blockon(defer_start(redis.url, n)) for n in "ab"]
    a, b = Place(nodes[0]), Place(nodes[1])
    yield a, b
    a.leave_all()
    b.leave_all()
    for n in reversed(nodes):
        stop_node(n)


def defer_start(url: str, node_id: str):
    from twisted.internet import defer

    return defer.ensureDeferred(start_cluster_node(**cluster_config(url, node_id)))


async def _register(place: Place, session, peer, procedure: str, request: int, **options) -> int:
    place.send(session, [wamp.REGISTER, request, options, procedure])
    reply = await peer.next(wamp.REGISTERED)
    assert reply[1] == request
    return reply[2]


async def _answer_one(peer: MemoryPeer, place: Place, session, result: str) -> None:
    inv = await peer.next(wamp.INVOCATION)
    place.send(session, [wamp.YIELD, inv[1], {}, [result]])


@ensure
async def test_a_call_reaches_the_callee_and_its_result_the_caller(places):
    a, b = places
    callee, callee_peer = b.join()
    caller, caller_peer = a.join()
    await _register(b, callee, callee_peer, "com.example.add", 1)
    a.send(caller, [wamp.CALL, 7, {}, "com.example.add", [2, 3]])
    inv = await callee_peer.next(wamp.INVOCATION)
    assert inv[4] == [2, 3]
    b.send(callee, [wamp.YIELD, inv[1], {}, [5]])
    assert await caller_peer.next(wamp.RESULT) == [wamp.RESULT, 7, {}, [5]]


@ensure
async def test_an_event_reaches_the_subscriber_and_not_the_publisher(places):
    a, b = places
    sub, sub_peer = b.join()
    pub, pub_peer = a.join()
    b.send(sub, [wamp.SUBSCRIBE, 1, {}, "com.example.topic"])
    sub_id = (await sub_peer.next(wamp.SUBSCRIBED))[2]
    a.send(pub, [wamp.SUBSCRIBE, 1, {}, "com.example.topic"])
    assert (await pub_peer.next(wamp.SUBSCRIBED))[2] == sub_id  # one subscription, the same id everywhere
    a.send(pub, [wamp.PUBLISH, 2, {"acknowledge": True}, "com.example.topic", ["hi"]])
    published = await pub_peer.next(wamp.PUBLISHED)
    event = await sub_peer.next(wamp.EVENT)
    assert event[1] == sub_id and event[2] == published[2] and event[4] == ["hi"]
    await sleep(0.1)
    assert not pub_peer.has(wamp.EVENT)  # publisher exclusion, by default


@ensure
async def test_precedence_and_unregister_are_decided_over_every_place(places):
    a, b = places
    exact, exact_peer = a.join()
    prefix, prefix_peer = b.join()
    caller, caller_peer = a.join()
    reg = await _register(a, exact, exact_peer, "com.example.p.q", 1)
    await _register(b, prefix, prefix_peer, "com.example.p", 1, match="prefix")
    a.send(caller, [wamp.CALL, 1, {}, "com.example.p.q"])
    await _answer_one(exact_peer, a, exact, "exact")
    assert (await caller_peer.next(wamp.RESULT))[3] == ["exact"]
    a.send(exact, [wamp.UNREGISTER, 2, reg])
    await exact_peer.next(wamp.UNREGISTERED)
    a.send(caller, [wamp.CALL, 2, {}, "com.example.p.q"])
    await _answer_one(prefix_peer, b, prefix, "prefix")
    assert (await caller_peer.next(wamp.RESULT))[3] == ["prefix"]


@ensure
async def test_first_goes_to_the_first_registered_callee_wherever_the_caller_is(places):
    a, b = places
    first, first_peer = b.join()
    second, second_peer = a.join()
    await _register(b, first, first_peer, "com.example.shared", 1, invoke="first")
    await _register(a, second, second_peer, "com.example.shared", 1, invoke="first")
    for place in (a, b):
        caller, caller_peer = place.join()
        place.send(caller, [wamp.CALL, 1, {}, "com.example.shared"])
        await _answer_one(first_peer, b, first, "first")
        assert (await caller_peer.next(wamp.RESULT))[3] == ["first"]
    assert not second_peer.has(wamp.INVOCATION)


@ensure
async def test_a_second_single_registration_is_refused_wherever_it_is_made(places):
    a, b = places
    one, one_peer = a.join()
    two, two_peer = b.join()
    await _register(a, one, one_peer, "com.example.single", 1)
    b.send(two, [wamp.REGISTER, 1, {}, "com.example.single"])
    error = await two_peer.next(wamp.ERROR)
    assert error[:2] == [wamp.ERROR, wamp.REGISTER] and error[4] == wamp.PROCEDURE_ALREADY_EXISTS


@ensure
async def test_after_unsubscribed_no_event_arrives(places):
    a, b = places
    sub, sub_peer = b.join()
    pub, pub_peer = a.join()
    b.send(sub, [wamp.SUBSCRIBE, 1, {}, "com.example.gone"])
    sub_id = (await sub_peer.next(wamp.SUBSCRIBED))[2]
    b.send(sub, [wamp.UNSUBSCRIBE, 2, sub_id])
    await sub_peer.next(wamp.UNSUBSCRIBED)
    a.send(pub, [wamp.PUBLISH, 3, {"acknowledge": True}, "com.example.gone", []])
    await pub_peer.next(wamp.PUBLISHED)
    await sleep(0.1)
    assert not sub_peer.has(wamp.EVENT)


@ensure
async def test_a_callee_leaving_fails_its_pending_calls_with_canceled(places):
    a, b = places
    callee, callee_peer = b.join()
    caller, caller_peer = a.join()
    await _register(b, callee, callee_peer, "com.example.slow", 1)
    a.send(caller, [wamp.CALL, 9, {}, "com.example.slow"])
    await callee_peer.next(wamp.INVOCATION)
    b.node.table.close(callee.id, "test")
    error = await caller_peer.next(wamp.ERROR)
    assert error[:3] == [wamp.ERROR, wamp.CALL, 9] and error[4] == wamp.CANCELED
