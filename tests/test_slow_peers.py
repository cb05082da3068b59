"""A peer that stops reading costs the router at most its outgoing budget, whatever the router sends it
(issue 11, item 2): for every outgoing message type, over real sockets and both transports, the router's
write buffer for that peer stays within max_outgoing_buffer + the control reserve (+ Twisted's 64 KiB
high-water mark and one message), the process's RSS does not grow with what was sent, the documented
policy applies (router.transport.flow), and every other session is still served.

Each flood is 10-30 MB, 40-120 times the budget; the router before the budget (b61dd17) queued all of it."""

from __future__ import annotations

import gc
import time

import msgpack
import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from twisted.internet import defer

from tests.helpers.poll import until
from tests.helpers.slowpeer import BUDGET, RESERVE, TRANSPORTS, listeners, peer_on, rs_url, send_many
from tests.wampclient import TIMEOUT, connect, with_timeout

ensure = pytest_twisted.ensureDeferred

HIGH_WATER = 64 * 1024  # Twisted pauses the producer past this many buffered bytes
BIG = 512 * 1024  # one bulk message
RSS_SLACK = 12 * 1024 * 1024  # allocator noise and the test clients' own buffers (same process); floods are 10-30 MB


def _bound(largest: int = BIG) -> int:
    """The most the router may buffer for one stalled peer: what Twisted holds before it pauses the
    producer (its high-water mark plus the write that crossed it), then budget + reserve."""
    return HIGH_WATER + largest + BUDGET + RESERVE


def rss() -> int:
    """This process's resident set in bytes: the router runs in the test's own reactor."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def queued(conn) -> int:
    """Bytes in the router's write buffer for one peer (its server-side TCP transport)."""
    t = conn.transport
    return len(t.dataBuffer) + t._tempDataLen


class Watch:
    """Samples a peer's router-side queue while a flood runs; `peak` is the largest seen."""

    def __init__(self, conn, exact: bool = False) -> None:
        self.conn = conn
        self.peak = 0
        self.exact = exact  # check the flow control's count against the bytes really queued

    def sample(self) -> int:
        n = queued(self.conn)
        self.peak = max(self.peak, n)
        conn = self.conn
        if self.exact and conn._paused:  # written since the pause: all counted (frame headers too)
            assert n <= HIGH_WATER + 256 + conn._backlog, f"{n} bytes queued, {conn._backlog} counted"
        return n


def stop_reading(peer) -> None:
    peer.proto.transport.pauseProducing()


def read_again(peer) -> None:
    peer.proto.transport.resumeProducing()


async def drain(peer, seconds: float = 2.0) -> list:
    """Everything the peer receives until it has been quiet for a while (bounded in time)."""
    got = []
    deadline = time.monotonic() + TIMEOUT * 2
    while time.monotonic() < deadline:
        try:
            got.append(await peer.recv(seconds))
        except defer.TimeoutError:
            break
    return got


async def still_served(node) -> None:
    """Another session, on each transport, still gets answers."""
    for url in (node.url, rs_url(node)):
        other = await connect(url, "msgpack")
        assert await with_timeout(other.call("wamp.session.count")) >= 1
        other.leave()


def gone(node, session) -> bool:
    return node.table.lookup(session.id) is None


async def flood(node, send, count: int, session, watch: Watch, bound: int, batch: int = 5, done=None,
                stop=None) -> int:
    """Send `count` requests from `session` in batches; after each batch wait until the router has read
    them (the session's msgs_in) and `done(i)` holds, or `stop()` (by default: the session has gone).
    The stalled peer's router-side queue is sampled after each batch and must stay within `bound`.
    Returns how many were sent."""
    if stop is None:
        def stop() -> bool:
            return gone(node, session)
    base = session.msgs_in
    for i in range(1, count + 1):
        send(i)
        if i % batch and i != count:
            continue
        await until(lambda n=i: stop() or (session.msgs_in - base >= n and (done is None or done(n))), TIMEOUT,
                    step=0.002, fail=False)
        watch.sample()
        assert watch.peak <= bound, f"{watch.peak} bytes queued for a peer that stopped reading"
        if stop():
            return i
    return count


def settled_rss() -> int:
    gc.collect()
    return rss()


def stall(peer, conn, exact: bool = False) -> tuple[Watch, int]:
    """Start watching the router's queue for `peer` (`conn`), note the RSS, then stop reading."""
    watch = Watch(conn, exact)
    before = settled_rss()
    stop_reading(peer)
    return watch, before




# -- 1. RESULT -----------------------------------------------------------------------------------
@TRANSPORTS
@ensure
async def test_results_to_a_caller_that_stops_reading(make_node, transport):
    node = make_node(listeners=listeners())
    callee = await connect(rs_url(node), "msgpack")
    answer, invoked = b"r" * BIG, []

    def big():
        invoked.append(1)
        return answer

    await callee.register(big, "com.example.big")
    caller, conn, session = await peer_on(node, transport)
    dealer = node.realm_router("realm1").dealer
    watch, before = stall(caller, conn)
    calls = 60  # 30 MB of RESULTs, 120 times the budget
    await flood(node, lambda i: caller.send([48, i, {}, "com.example.big", []]), calls, session, watch, _bound(),
                done=lambda n: len(invoked) == n and dealer.pending() == 0)
    grown = rss() - before
    assert watch.peak <= _bound(), watch.peak
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB for {calls * BIG >> 20} MB of RESULTs"
    await still_served(node)
    read_again(caller)  # every call is answered: RESULT, or ERROR canceled for the dropped ones
    answers = {}
    for _ in range(calls):
        m = await caller.recv()
        answers[m[1] if m[0] == 50 else m[2]] = m
    assert set(answers) == set(range(1, calls + 1))
    dropped = [m for m in answers.values() if m[0] == 8]
    assert dropped and all(m[:5] == [8, 48, m[2], {}, "wamp.error.canceled"] for m in dropped), dropped[:1]
    assert "reads too slowly" in dropped[0][5][0]


# -- 2. meta answers (no callee needed) ----------------------------------------------------------
@TRANSPORTS
@ensure
async def test_meta_answers_to_a_caller_that_stops_reading(make_node, transport):
    node = make_node(listeners=listeners())
    subscriber, _, _ = await peer_on(node, "rawsocket")
    topics = 2000  # wamp.subscription.list answers of 18 KB
    for i in range(1, topics + 1):
        subscriber.send([32, i, {}, f"com.example.topic.{i}"])
    for _ in range(topics):
        assert (await subscriber.recv())[0] == 33
    caller, conn, session = await peer_on(node, transport)
    answer = len(msgpack.packb(node.realm_router("realm1").meta.subscription_list(session, [], {})))
    watch, before = stall(caller, conn)
    sent = await flood(node, lambda i: caller.send([48, i, {}, "wamp.subscription.list", []]), 3000, session,
                       watch, _bound(answer), batch=50)
    # RESULTs past the budget became short ERRORs, and their flood past the reserve ended the session
    assert gone(node, session), f"still connected after {sent} answers of {answer} bytes"
    assert sent * answer > 40 * BUDGET
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB"
    subscriber.send([48, topics + 1, {}, "wamp.session.count", []])
    assert (await subscriber.recv())[:2] == [50, topics + 1]
    await still_served(node)
    read_again(caller)
    await with_timeout(caller.closed)


# -- 3. INVOCATION -------------------------------------------------------------------------------
async def _stalled_callee(node, transport, procedure="com.example.slow", roles=None):
    """A raw peer that has registered `procedure` (the test decides whether it stops reading)."""
    callee, conn, session = await peer_on(node, transport, roles)
    callee.send([64, 1, {}, procedure])
    assert (await callee.recv())[0] == 65
    return callee, conn, session


@TRANSPORTS
@ensure
async def test_invocations_to_a_callee_that_stops_reading_fail_the_calls(make_node, transport):
    node = make_node(listeners=listeners())
    callee, conn, _ = await _stalled_callee(node, transport)
    caller, _, session = await peer_on(node, "rawsocket")
    dealer = node.realm_router("realm1").dealer
    watch, before = stall(callee, conn)
    arg = b"a" * BIG
    calls = 60  # 30 MB of INVOCATIONs
    await flood(node, lambda i: caller.send([48, i, {}, "com.example.slow", [arg]]), calls, session, watch, _bound())
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB"
    # the calls past the callee's budget failed at once; only those written wait for the callee
    refused = [await caller.recv() for _ in range(calls - dealer.pending())]
    assert dealer.pending() <= 10  # what the kernel took, plus the budget
    assert all(m[:5] == [8, 48, m[2], {}, "wamp.error.canceled"] for m in refused), refused[:1]
    assert refused[0][5] == ["the callee could not be sent the call"]
    await still_served(node)
    callee.drop()  # the calls still in flight end too
    for _ in range(calls - len(refused)):
        assert (await caller.recv())[4] == "wamp.error.canceled"
    assert dealer.pending() == 0


@TRANSPORTS
@ensure
async def test_call_timeouts_free_the_slots_and_queue_no_bytes(make_node, transport):
    """max_pending_calls alone did not bound a stalled callee: a call timeout freed the slot while the
    INVOCATION's bytes stayed queued. Now a call the callee cannot be sent fails at once."""
    node = make_node(listeners=listeners(), limits={"max_pending_calls": 5})
    callee, conn, _ = await _stalled_callee(node, transport)
    caller, _, session = await peer_on(node, "rawsocket")
    dealer = node.realm_router("realm1").dealer
    watch, before = stall(callee, conn)
    arg = b"a" * BIG
    answers = []

    async def answered(n: int) -> None:
        while len(answers) < n:
            answers.append(await caller.recv())

    for batch in range(12):  # 12 × 5 calls of 512 KB, each batch timing out after 50 ms
        for i in range(batch * 5 + 1, batch * 5 + 6):
            caller.send([48, i, {"timeout": 50}, "com.example.slow", [arg]])
        await answered(batch * 5 + 5)
        watch.sample()
        assert watch.peak <= _bound(), f"{watch.peak} bytes queued for a callee that stopped reading"
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB"
    assert dealer.pending() == 0
    uris = {m[4] for m in answers}
    assert uris <= {"wamp.error.timeout", "wamp.error.canceled"} and "wamp.error.canceled" in uris, uris
    assert ["the callee could not be sent the call"] in [m[5] for m in answers]
    await still_served(node)


# -- 4. progressive RESULTs ------------------------------------------------------------------------
@TRANSPORTS
@pytest.mark.parametrize("canceling", [True, False], ids=["call_canceling", "no_canceling"])
@ensure
async def test_progressive_results_to_a_caller_that_stops_reading(make_node, transport, canceling):
    node = make_node(listeners=listeners())
    features = {"progressive_call_results": True, "call_canceling": canceling}
    callee, _, callee_session = await _stalled_callee(node, "rawsocket", "com.example.stream",
                                                      roles={"callee": {"features": features}})
    caller, conn, session = await peer_on(node, transport)
    dealer = node.realm_router("realm1").dealer
    watch, before = stall(caller, conn)
    caller.send([48, 1, {"receive_progress": True}, "com.example.stream", []])
    inv = await callee.recv()
    assert inv[0] == 68 and inv[3].get("receive_progress") is True, inv
    chunk = b"p" * BIG
    sent = await flood(node, lambda i: callee.send([70, inv[1], {"progress": True}, [chunk]]), 60, callee_session,
                       watch, _bound(), stop=lambda: dealer.pending() == 0)
    assert dealer.pending() == 0, "a refused progressive RESULT must end the call"
    assert sent < 60
    callee.send([70, inv[1], {}, ["late"]])  # the final answer comes too late and is ignored
    if canceling:
        assert await callee.recv() == [69, inv[1], {"mode": "killnowait", "reason": "wamp.error.canceled"}]
    else:
        await sleep(0.1)
        assert not callee.inbox.pending  # no INTERRUPT to a callee that did not announce call_canceling
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB"
    await still_served(node)
    read_again(caller)
    for _ in range(60):
        m = await caller.recv()
        if m[0] != 50:
            break
        assert m[:3] == [50, 1, {"progress": True}]
    assert m[:5] == [8, 48, 1, {}, "wamp.error.canceled"], m[:5]
    assert not await drain(caller, 0.2)  # and nothing after the ERROR


# -- 5. ERROR with a payload relayed from a callee -----------------------------------------------
@TRANSPORTS
@ensure
async def test_callee_errors_with_payload_to_a_caller_that_stops_reading(make_node, transport):
    node = make_node(listeners=listeners())
    callee, _, _ = await _stalled_callee(node, "rawsocket", "com.example.fails")  # a callee that reads
    blob = b"x" * BIG
    caller, conn, session = await peer_on(node, transport)
    watch, before = stall(caller, conn)
    calls = 60

    for i in range(1, calls + 1):
        caller.send([48, i, {}, "com.example.fails", []])
        if i % 5 == 0:
            for _ in range(5):
                inv = await callee.recv()
                callee.send([8, 68, inv[1], {}, "com.example.oops", [blob]])
            await until(lambda n=i: node.realm_router("realm1").dealer.pending() == 0 and session.msgs_in >= n,
                        TIMEOUT, step=0.002, fail=False)
            watch.sample()
            assert watch.peak <= _bound(), f"{watch.peak} bytes queued for a peer that stopped reading"
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB"
    await still_served(node)
    read_again(caller)
    answers = [await caller.recv() for _ in range(calls)]
    assert sorted(m[2] for m in answers) == list(range(1, calls + 1))  # every call answered
    relayed = [m for m in answers if m[4] == "com.example.oops"]
    dropped = [m for m in answers if m[4] == "wamp.error.canceled"]
    assert relayed and dropped and len(relayed) + len(dropped) == calls
    assert dropped[0][5] == ["the answer was dropped: this session reads too slowly"]


# -- 6. EVENT --------------------------------------------------------------------------------------
@TRANSPORTS
@pytest.mark.parametrize("policy", ["drop", "disconnect"])
@ensure
async def test_events_to_a_subscriber_that_stops_reading(make_node, transport, policy):
    node = make_node(listeners=listeners(slow_consumer=policy))
    subscriber, conn, session = await peer_on(node, transport)
    subscriber.send([32, 1, {}, "com.example.firehose"])
    assert (await subscriber.recv())[0] == 33
    publisher, _, pub_session = await peer_on(node, "rawsocket")
    watch, before = stall(subscriber, conn)
    blob = b"e" * BIG
    sent = await flood(node, lambda i: publisher.send([16, i, {}, "com.example.firehose", [blob]]), 60,
                       pub_session, watch, _bound(), stop=lambda: gone(node, session))
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB"
    await still_served(node)
    if policy == "disconnect":
        assert gone(node, session) and sent < 60
        read_again(subscriber)
        await with_timeout(subscriber.closed)
        return
    assert not gone(node, session) and conn.dropped_events > 0
    read_again(subscriber)  # it catches up and gets new events
    await until(lambda: not conn._paused, TIMEOUT, "the transport to resume", step=0.002)
    await drain(subscriber, 0.2)
    publisher.send([16, 61, {}, "com.example.firehose", ["after"]])
    assert (await subscriber.recv())[4] == ["after"]


# -- 7. PONGs -------------------------------------------------------------------------------------
async def pongs_to_a_peer_that_stops_reading(make_node, policy: str, transport: str, pinger, count: int,
                                             batch: int) -> None:
    """A joined peer stops reading and floods PINGs: `pinger(peer, conn)` returns the flood's send(i)
    (each ending in a PUBLISH, counted in msgs_in: the router has read the PINGs) and its largest PONG."""
    node = make_node(listeners=listeners(slow_consumer=policy))
    peer, conn, session = await peer_on(node, transport)
    watch, before = stall(peer, conn)
    send, largest = pinger(peer, conn)
    sent = await flood(node, send, count, session, watch, _bound(largest), batch=batch)
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB for {sent} MB of PONGs"
    await still_served(node)
    if policy == "disconnect":
        assert gone(node, session) and sent < count
    else:
        assert not gone(node, session) and conn.dropped_events > 0
    peer.drop()


@pytest.mark.parametrize("policy", ["drop", "disconnect"])
@ensure
async def test_pongs_to_a_rawsocket_client_that_stops_reading(make_node, policy):
    def pinger(peer, conn):
        ping = b"p" * conn.factory.max_length  # the largest frame the router takes (1 MiB)

        def send(i: int) -> None:
            peer.ping(ping)
            peer.send([16, i, {}, "com.example.mark", []])

        return send, len(ping) + 4

    await pongs_to_a_peer_that_stops_reading(make_node, policy, "rawsocket", pinger, 30, batch=3)


@pytest.mark.parametrize("policy", ["drop", "disconnect"])
@ensure
async def test_websocket_pongs_to_a_client_that_stops_reading(make_node, policy):
    """Autobahn answers every WebSocket PING (at most 125 bytes) with a PONG: a client that pings and
    never reads got them all queued."""
    def pinger(peer, conn):
        ping = bytes((0x89, 0x80 | 125, 0, 0, 0, 0)) + b"p" * 125  # masked with zeros, as send_many
        mark = msgpack.packb([16, 1, {}, "com.example.mark", []])
        mark = bytes((0x82, 0x80 | len(mark), 0, 0, 0, 0)) + mark

        def send(i: int) -> None:
            peer.proto.transport.write(ping * 2000 + mark)

        return send, 256

    await pongs_to_a_peer_that_stops_reading(make_node, policy, "websocket", pinger, 40, batch=1)  # 80,000 PONGs, 10 MB


# -- 8. control answers: WELCOME, GOODBYE, SUBSCRIBED, UNSUBSCRIBED ------------------------------
class Marks:
    """A reading subscriber that counts marker events: a peer's PUBLISH after a batch of its requests
    shows that the router has read the batch, whatever session the peer has by then."""

    def __init__(self, client) -> None:
        self.client = client
        self.seen = 0

    def mark(self, *args) -> None:
        self.seen += 1


async def _marks(node) -> Marks:
    client = await connect(rs_url(node), "msgpack")
    marks = Marks(client)
    await client.subscribe(marks.mark, "com.example.mark")
    return marks


@TRANSPORTS
@ensure
async def test_welcome_and_goodbye_to_a_peer_that_stops_reading(make_node, transport):
    """HELLO, GOODBYE, HELLO, ... pipelined without reading: each WELCOME is most of a kilobyte."""
    node = make_node(listeners=listeners())
    marks = await _marks(node)
    peer, conn, session = await peer_on(node, transport)
    watch, before = stall(peer, conn)
    hello = [1, "realm1", {"roles": {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}}]
    cycles = 20000  # 15 MB of WELCOMEs
    for i in range(1, cycles + 1):
        peer.send([6, {}, "wamp.close.normal"])
        peer.send(hello)
        if i % 200 == 0:
            peer.send([16, 1, {}, "com.example.mark", []])
            await until(lambda n=i // 200: marks.seen >= n or conn.transport.disconnected, TIMEOUT, step=0.002,
                        fail=False)
            watch.sample()
            assert watch.peak <= _bound(4096), f"{watch.peak} bytes queued for a peer that stopped reading"
            if conn.transport.disconnected:
                break
    assert conn.transport.disconnected and i < cycles, "past budget + reserve the peer is disconnected"
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB"
    assert node.table.size() == 1 and marks.client.is_attached()
    await still_served(node)


@TRANSPORTS
@ensure
async def test_subscribe_and_unsubscribe_answers_to_a_peer_that_stops_reading(make_node, transport):
    node = make_node(listeners=listeners())
    peer, conn, session = await peer_on(node, transport)
    peer.send([32, 1, {}, "com.example.t"])
    sub_id = (await peer.recv())[2]
    watch, before = stall(peer, conn, exact=True)

    bad = "com.example." + "x" * 200 + "..bad"  # its ERROR quotes a short prefix: 150 bytes

    def send(i: int) -> None:  # UNSUBSCRIBE, SUBSCRIBE and four invalid SUBSCRIBEs: 600 bytes of answers
        if i % 3000 == 0:
            send_many(peer, [m for j in range(i - 3000, i, 6)
                             for m in ([34, j + 1, sub_id], [32, j + 2, {}, "com.example.t"],
                                       *([32, j + k, {}, bad] for k in range(3, 7)))])

    sent = await flood(node, send, 150000, session, watch, _bound(256), batch=3000)  # exact accounting
    assert gone(node, session) and sent < 150000, "past budget + reserve the peer is disconnected"
    grown = rss() - before
    assert grown < RSS_SLACK, f"RSS grew {grown >> 20} MB"
    await still_served(node)


# -- 9. slow_consumer_timeout ----------------------------------------------------------------------
@TRANSPORTS
@ensure
async def test_a_peer_over_budget_longer_than_the_timeout_is_disconnected_without_more_writes(make_node, transport):
    node = make_node(listeners=listeners(slow_consumer_timeout=1))
    subscriber, conn, session = await peer_on(node, transport)
    subscriber.send([32, 1, {}, "com.example.firehose"])
    assert (await subscriber.recv())[0] == 33
    publisher, _, pub_session = await peer_on(node, "rawsocket")
    stop_reading(subscriber)
    blob = b"e" * BIG
    for _ in range(20):  # until the kernel's buffers are full and the router holds the rest
        await flood(node, lambda i: publisher.send([16, i, {}, "com.example.firehose", [blob]]), 10, pub_session,
                    Watch(conn), _bound())
        await sleep(0.3)
        if conn._paused and conn.dropped_events:
            break
    assert conn.dropped_events and not gone(node, session)
    assert queued(conn) > BUDGET // 2  # the router still holds its share of what the peer has not read
    over = time.monotonic()
    # nothing more is sent to it: the timeout alone ends it
    await until(lambda: gone(node, session), 3, "the peer gone 3 s after going over budget", step=0.002)
    assert time.monotonic() - over > 0.5
    read_again(subscriber)
    await with_timeout(subscriber.closed)
    await still_served(node)


# -- 10. a departed peer's buffers ---------------------------------------------------------------
@TRANSPORTS
@ensure
async def test_a_departed_slow_peers_buffer_is_freed_without_the_gc(make_node, transport):
    node = make_node(listeners=listeners())
    subscribers = []
    for _ in range(4):
        peer, conn, session = await peer_on(node, transport)
        peer.send([32, 1, {}, "com.example.firehose"])
        assert (await peer.recv())[0] == 33
        stop_reading(peer)
        subscribers.append((peer, conn, session))
    publisher, _, pub_session = await peer_on(node, "rawsocket")
    blob = b"e" * BIG
    gc.collect()
    for _ in range(20):  # until the kernel's buffers are full and the router holds the rest
        await flood(node, lambda i: publisher.send([16, i, {}, "com.example.firehose", [blob]]), 10, pub_session,
                    Watch(conn), 1 << 40)
        await sleep(0.3)
        if all(c._paused and queued(c) > BUDGET // 2 for _, c, _ in subscribers):
            break
    held = [queued(c) for _, c, _ in subscribers]
    assert min(held) > BUDGET // 2, held
    gc.disable()
    try:
        for peer, _, _ in subscribers:
            peer.drop()
        await until(lambda: all(gone(node, s) for _, _, s in subscribers), TIMEOUT, "every slow subscriber gone",
                    step=0.002)
        assert [queued(c) for _, c, _ in subscribers] == [0] * 4  # freed at once, not at the next GC round
    finally:
        gc.enable()
    await still_served(node)


# -- 11. a connection the router closes while the peer's socket is backed up -------------------------
@ensure
async def test_a_rawsocket_the_router_closes_while_backed_up_does_close_once_drained(make_node):
    """Twisted closes a connection with a registered producer only once that producer is gone: a
    RawSocket ABORTed while its socket was backed up (the producer paused) stayed open for good after
    the peer read everything (found by scripts/fuzz: a RawSocket HELLO with no answer and no close)."""
    node = make_node(listeners=listeners())
    subscriber, conn, session = await peer_on(node, "rawsocket")
    subscriber.send([32, 1, {}, "com.example.firehose"])
    assert (await subscriber.recv())[0] == 33
    publisher, _, pub_session = await peer_on(node, "rawsocket")
    stop_reading(subscriber)
    blob = b"e" * BIG
    for _ in range(20):
        await flood(node, lambda i: publisher.send([16, i, {}, "com.example.firehose", [blob]]), 4, pub_session,
                    Watch(conn), _bound())
        if conn._paused:
            break
    assert conn._paused
    subscriber.send_frame(b"\xc1")  # never valid msgpack: ABORT, then the router closes the connection
    await until(lambda: gone(node, session), 3, "the peer gone", step=0.002)
    read_again(subscriber)
    await with_timeout(subscriber.closed, 5)
    await still_served(node)
