"""The authentication throttle over real sockets (issue 11, item 4): checked when an answer is about to
be verified, per (address, authid), with caps on verifications in flight; X-Forwarded-For only from
trusted proxies."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep

from realms.schema import ConfigError
from realms.secrets import hash_secret
from router.config import parse
from tests.wampclient import raw_connect

ensure = pytest_twisted.ensureDeferred

EVERYTHING = [{"uri": "", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]
FAILED = "wamp.error.authentication_failed"
BLOCKED = "wamp.error.not_authorized"
BUSY = "courtyard.error.too_many_authentications"
SLOW_TICKET = hash_secret("slow-ticket", iterations=600_000)  # ~0.3 s per verification here
MID_TICKET = hash_secret("mid-ticket", iterations=60_000)  # ~30 ms


def _realm(throttle, anonymous: bool = False, **listener) -> dict:
    return {
        "listeners": [{"port": 0, **listener}],
        "realms": [{
            "uri": "realm1",
            "auth": {"anonymous": anonymous, "ticket": True, "throttle": throttle},
            "users": {
                "alice": {"role": "user", "ticket": hash_secret("alice-ticket", iterations=1000)},
                "erin": {"role": "user", "ticket": hash_secret("erin-ticket", iterations=1000)},
                "slow": {"role": "user", "ticket": SLOW_TICKET},
                "mid": {"role": "user", "ticket": MID_TICKET},
            },
            "roles": {"user": {"permissions": EVERYTHING}, "anonymous": {"permissions": EVERYTHING}},
        }],
    }


async def _challenged(url: str, authid: str, bind: str | None = None, headers: dict | None = None):
    """A raw peer that sent HELLO for a ticket login and got its CHALLENGE."""
    peer = await raw_connect(url, bind=bind, headers=headers)
    peer.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": authid}])
    msg = await peer.recv()
    assert msg[0] == 4, msg
    return peer


async def _answer(peer, ticket: str) -> list:
    peer.send([5, ticket, {}])
    return await peer.recv()


async def _login(url: str, authid: str, ticket: str, **kw) -> list:
    """HELLO → (CHALLENGE → AUTHENTICATE) → the router's last word: WELCOME or ABORT."""
    peer = await raw_connect(url, **kw)
    peer.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": authid}])
    msg = await peer.recv()
    if msg[0] == 4:
        msg = await _answer(peer, ticket)
    return msg


def _reason(msg: list) -> str:
    return "welcome" if msg[0] == 2 else msg[2]


@ensure
async def test_connections_challenged_before_the_failures_are_refused_after_them(make_node):
    node = make_node(**_realm({"max_failures": 5, "window": 60, "block_for": 60}))
    peers = [await _challenged(node.url, "alice") for _ in range(20)]  # all challenged before any failure
    answers = [_reason(await _answer(p, "guess")) for p in peers[:19]]
    assert answers == [FAILED] * 5 + [BLOCKED] * 14
    last = await _answer(peers[19], "alice-ticket")  # the right ticket, challenged long ago: still refused
    assert last[0] == 3 and last[2] == BLOCKED, last
    assert "too many failed authentications" in last[1]["message"]
    assert node.table.size() == 0


@ensure
async def test_failures_for_one_authid_block_neither_other_authids_nor_anonymous(make_node):
    node = make_node(**_realm({"max_failures": 3, "window": 60, "block_for": 60}, anonymous=True))
    for _ in range(3):
        assert _reason(await _login(node.url, "alice", "guess")) == FAILED
    assert _reason(await _login(node.url, "alice", "alice-ticket")) == BLOCKED  # refused at HELLO now
    assert _reason(await _login(node.url, "erin", "erin-ticket")) == "welcome"  # same address, other authid
    anon = await raw_connect(node.url)
    assert (await anon.hello())[0] == 2  # anonymous from the same address
    # alice from another address is not blocked either
    assert _reason(await _login(node.url, "alice", "alice-ticket", bind="127.0.0.2")) == "welcome"


@ensure
async def test_an_address_spraying_many_authids_is_blocked_as_a_whole(make_node):
    node = make_node(**_realm({"max_failures": 2, "max_failures_per_address": 6, "window": 60, "block_for": 60},
                              anonymous=True))
    early = await _challenged(node.url, "erin")  # challenged before the spray
    for i in range(6):  # one guess per name: no authid reaches max_failures
        assert _reason(await _login(node.url, f"user{i}", "guess")) == FAILED
    refused = await _login(node.url, "alice", "alice-ticket")  # the right ticket: refused at HELLO
    assert refused[0] == 3 and refused[2] == BLOCKED and "from this address" in refused[1]["message"], refused
    assert _reason(await _answer(early, "erin-ticket")) == BLOCKED  # and at AUTHENTICATE
    anon = await raw_connect(node.url)
    assert (await anon.hello())[0] == 2  # anonymous from the same address is not affected
    assert _reason(await _login(node.url, "alice", "alice-ticket", bind="127.0.0.2")) == "welcome"


@ensure
async def test_concurrent_guesses_get_no_more_tries_than_sequential_ones(make_node):
    node = make_node(**_realm({"max_failures": 3, "window": 60, "block_for": 60, "max_in_flight_per_address": 50}))
    peers = [await _challenged(node.url, "slow") for _ in range(10)]
    for p in peers:
        p.send([5, "guess", {}])
    answers = [_reason(await p.recv(10)) for p in peers]
    assert answers.count(FAILED) == 3, answers
    assert set(answers) <= {FAILED, BUSY, BLOCKED}  # the waiting ones are refused once the authid is blocked
    assert node.throttle.waiting == 0


@ensure
async def test_in_flight_caps_refuse_the_excess_and_others_still_log_in(make_node):
    node = make_node(**_realm({"max_failures": 1000, "max_in_flight_per_address": 2, "max_in_flight": 3,
                               "max_waiting_per_address": 0}))
    flood = [await _challenged(node.url, "slow") for _ in range(10)]
    good = await _challenged(node.url, "slow", bind="127.0.0.2")
    third = await _challenged(node.url, "slow", bind="127.0.0.3")
    for p in flood:
        p.send([5, "guess", {}])
    refused = [await p.recv() for p in flood[2:]]  # answered at once, no hash computed for them
    assert {_reason(m) for m in refused} == {BUSY}
    assert "from this address" in refused[0][1]["message"]
    started = time.monotonic()
    good.send([5, "slow-ticket", {}])
    for _ in range(200):  # until the router has read it (bounded: 2 s)
        if node.throttle.in_flight == 3:
            break
        await sleep(0.01)
    third.send([5, "guess", {}])  # the node's total cap (3) is reached: 2 from the flood + the good one
    over = await third.recv()
    assert _reason(over) == BUSY and "from this address" not in over[1]["message"], over
    welcome = await good.recv(10)
    assert welcome[0] == 2, welcome
    assert time.monotonic() - started < 5  # not queued behind the flood's hashes
    assert [_reason(await p.recv(10)) for p in flood[:2]] == [FAILED, FAILED]
    assert node.throttle.in_flight == 0


@ensure
async def test_simultaneous_correct_logins_from_one_address_wait_for_a_slot(make_node):
    """Issue 23, item 6: 20 correct logins at once from one address (a NAT) all get WELCOME: the answers
    over the in-flight cap wait a moment for a slot instead of courtyard.error.too_many_authentications."""
    node = make_node(**_realm({"max_failures": 5}))
    peers = [await _challenged(node.url, "mid") for _ in range(20)]
    for p in peers:
        p.send([5, "mid-ticket", {}])
    answers = [_reason(await p.recv(20)) for p in peers]
    assert answers == ["welcome"] * 20, answers
    assert node.throttle.in_flight == 0 and node.throttle.waiting == 0


@ensure
async def test_the_wait_for_a_slot_is_bounded_per_address(make_node):
    node = make_node(**_realm({"max_failures": 1000, "max_in_flight_per_address": 2, "max_waiting_per_address": 3}))
    peers = [await _challenged(node.url, "slow") for _ in range(10)]
    for p in peers:
        p.send([5, "slow-ticket", {}])
    answers = [_reason(await p.recv(20)) for p in peers]
    assert answers.count("welcome") == 5 and answers.count(BUSY) == 5, answers  # 2 in flight + 3 waiting


@ensure
async def test_a_slot_is_freed_when_the_peer_leaves_during_verification(make_node):
    node = make_node(**_realm({"max_failures": 5, "max_in_flight_per_address": 1, "max_in_flight": 1}))
    quitter = await _challenged(node.url, "slow")
    quitter.send([5, "slow-ticket", {}])
    for _ in range(200):  # until the router has read it (bounded: 2 s)
        if node.throttle.in_flight == 1:
            break
        await sleep(0.01)
    quitter.drop()
    for _ in range(500):  # the hash finishes for no one (bounded: 5 s)
        if node.throttle.in_flight == 0:
            break
        await sleep(0.01)
    assert node.throttle.in_flight == 0
    assert _reason(await _login(node.url, "slow", "slow-ticket")) == "welcome"


@ensure
async def test_throttle_false_is_accepted_and_counts_no_failures(make_node):
    node = make_node(**_realm(False))
    for _ in range(8):
        assert _reason(await _login(node.url, "alice", "guess")) == FAILED
    assert _reason(await _login(node.url, "alice", "alice-ticket")) == "welcome"


@ensure
async def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(make_node):
    throttle = {"max_failures": 2, "window": 60, "block_for": 60}
    node = make_node(**_realm(throttle, trusted_proxies=["127.0.0.1", "10.0.0.0/8"]))
    # the client's own entry (198.51.100.7) may be made up; the right-most untrusted one is the client
    via_a = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.1.2.3"}
    via_b = {"X-Forwarded-For": "203.0.113.10"}
    peer = await _challenged(node.url, "erin", headers=via_a)
    welcome = await _answer(peer, "erin-ticket")
    details = node.table.to_details_map(welcome[1])
    assert details["transport"]["peername"] == "tcp4:203.0.113.9:0"
    for _ in range(2):
        assert _reason(await _login(node.url, "alice", "guess", headers=via_a)) == FAILED
    assert _reason(await _login(node.url, "alice", "alice-ticket", headers=via_a)) == BLOCKED
    # another client behind the same proxy is not blocked
    assert _reason(await _login(node.url, "alice", "alice-ticket", headers=via_b)) == "welcome"
    # from a peer that is not a trusted proxy the header is ignored: it is that peer's own address
    assert _reason(await _login(node.url, "alice", "alice-ticket", headers=via_a, bind="127.0.0.2")) == "welcome"
    peer = await _challenged(node.url, "erin", bind="127.0.0.2", headers=via_a)
    welcome = await _answer(peer, "erin-ticket")
    assert node.table.to_details_map(welcome[1])["transport"]["peername"].startswith("tcp4:127.0.0.2:")


@ensure
async def test_forwarded_for_is_ignored_without_trusted_proxies(make_node):
    node = make_node(**_realm({"max_failures": 2, "window": 60, "block_for": 60}))
    for spoof in ("203.0.113.1", "203.0.113.2"):
        assert _reason(await _login(node.url, "alice", "guess", headers={"X-Forwarded-For": spoof})) == FAILED
    # a new made-up address does not get around the block: it is 127.0.0.1 all along
    msg = await _login(node.url, "alice", "alice-ticket", headers={"X-Forwarded-For": "203.0.113.3"})
    assert _reason(msg) == BLOCKED
    peer = await _challenged(node.url, "erin", headers={"X-Forwarded-For": "203.0.113.4"})
    welcome = await _answer(peer, "erin-ticket")
    assert node.table.to_details_map(welcome[1])["transport"]["peername"].startswith("tcp4:127.0.0.1:")


def test_throttle_and_trusted_proxies_config():
    cfg = parse(_realm({"max_failures": 7, "max_in_flight": 9}))
    t = cfg.realms[0].auth.throttle
    assert (t.max_failures, t.window, t.block_for, t.max_in_flight_per_address, t.max_in_flight) == (7, 60, 30, 4, 9)
    assert t.max_failures_per_address == 70  # 10 × max_failures unless given
    assert parse(_realm({"max_failures_per_address": 0})).realms[0].auth.throttle.max_failures_per_address == 0
    assert parse(_realm(False)).realms[0].auth.throttle.max_failures == 0
    assert parse(_realm(True)).realms[0].auth.throttle == parse(_realm({})).realms[0].auth.throttle
    bad = [
        (_realm({"max_in_flight": 0}), "realms[0].auth.throttle.max_in_flight"),
        (_realm({"burst": 1}), "realms[0].auth.throttle.burst"),
        (_realm({}, trusted_proxies=["10.0.0.300"]), "listeners[0].trusted_proxies[0]"),
        (_realm({}, trusted_proxies="127.0.0.1"), "listeners[0].trusted_proxies"),
        (_realm({}, type="rawsocket", trusted_proxies=["127.0.0.1"]), "listeners[0].trusted_proxies"),
    ]
    for raw, path in bad:
        with pytest.raises(ConfigError) as e:
            parse(raw)
        assert e.value.path == path


def test_throttle_keys_are_bounded():
    from realms.realm import Throttle  # here, so that the socket tests above run on code without it
    from router.auth.throttle import MAX_KEY_AUTHID, MAX_TRACKED, AuthThrottle, throttle_key

    long_key = throttle_key("realm1", "127.0.0.1", "x" * 1_000_000)
    assert len(long_key[2]) <= MAX_KEY_AUTHID
    assert throttle_key("realm1", "127.0.0.1", "x" * 1_000_000) == long_key
    assert throttle_key("realm1", "127.0.0.1", "x" * 1_000_001) != long_key
    t = AuthThrottle()
    config = Throttle(max_failures=1, block_for=60)
    for i in range(MAX_TRACKED + 10):
        t.failed(throttle_key("realm1", "127.0.0.1", f"u{i}"), config)
    assert len(t._blocked) == MAX_TRACKED and len(t._failures) == 0
    for i in range(MAX_TRACKED + 10):  # failures from many addresses: the per-address tables are bounded too
        t.failed(throttle_key("realm1", f"10.0.{i // 256}.{i % 256}", "u"), config)
    assert len(t._address_failures) + len(t._address_blocked) <= 2 * MAX_TRACKED
