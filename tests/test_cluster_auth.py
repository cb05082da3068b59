"""The auth failure throttle and the cookie store across a cluster (issue 12, point 6): failures
spread over two nodes count together; a cookie set by one node re-authenticates on another. Real
`courtyard start` processes on a real redis-server, raw WAMP peers over WebSocket."""

from __future__ import annotations

import pytest
import pytest_twisted

from realms.secrets import hash_secret
from tests.helpers.poll import until
from tests.helpers.realms import EVERYTHING
from tests.wampclient import raw_connect

ensure = pytest_twisted.ensureDeferred
THROTTLE = {"max_failures": 3, "window": 60, "block_for": 60}
CONFIG = {"realms": [{"uri": "realm1",
                      "auth": {"anonymous": False, "ticket": True, "throttle": THROTTLE, "cookie": {"max_age": 3600}},
                      "users": {"alice": {"role": "user", "ticket": hash_secret("alice-ticket", iterations=1000)}},
                      "roles": {"user": {"permissions": EVERYTHING}}}]}


@pytest.fixture
def two_nodes(node_processes):
    return node_processes("ab", CONFIG)


async def _login(url: str, ticket: str | None, headers: dict | None = None, methods=("ticket",)):
    """HELLO as alice → (CHALLENGE → AUTHENTICATE) → the router's last word, and the peer."""
    peer = await raw_connect(url, headers=headers)
    peer.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": list(methods), "authid": "alice"}])
    msg = await peer.recv()
    if msg[0] == 4:
        peer.send([5, ticket, {}])
        msg = await peer.recv()
    return msg, peer


def _reason(msg: list) -> str:
    return "welcome" if msg[0] == 2 else msg[2]


@ensure
async def test_a_brute_force_spread_over_two_nodes_is_throttled(two_nodes):
    a, b = two_nodes
    answers = [_reason((await _login(node.url, "guess"))[0]) for node in (a, b, a)]
    assert answers == ["wamp.error.authentication_failed"] * 3
    # b saw one failure of its own; the cluster saw three (max_failures): alice from here is blocked on b
    msg, _ = await _login(b.url, "alice-ticket")
    assert _reason(msg) == "wamp.error.not_authorized" and "too many failed authentications" in msg[1]["message"]
    assert _reason((await _login(b.url, "alice-ticket"))[0]) == "wamp.error.not_authorized"  # now at HELLO


@ensure
async def test_a_cookie_set_by_node_a_authenticates_on_node_b_until_logout(two_nodes, redis_server):
    a, b = two_nodes
    welcome, first = await _login(a.url, "alice-ticket", methods=("cookie", "ticket"))
    assert _reason(welcome) == "welcome" and welcome[2]["authmethod"] == "ticket"
    cookie = first.http_headers["set-cookie"].split(";", 1)[0]
    assert cookie.split("=", 1)[1] not in str(redis_server.command("KEYS", "cy:ck:*"))  # hashed in Redis
    on_b, second = await _login(b.url, None, {"Cookie": cookie}, methods=("cookie",))
    assert _reason(on_b) == "welcome"
    assert (on_b[2]["authid"], on_b[2]["authrole"], on_b[2]["authmethod"]) == ("alice", "user", "cookie")
    # a made-up cookie gets nothing on b
    stranger, _ = await _login(b.url, None, {"Cookie": "cbtid=" + "x" * 32}, methods=("cookie",))
    assert _reason(stranger) == "wamp.error.no_auth_method"
    # a logout on b ends the cookie on a too
    second.send([6, {}, "wamp.close.logout"])
    assert (await second.recv())[2] == "wamp.close.goodbye_and_out"
    after, _ = await _login(a.url, None, {"Cookie": cookie}, methods=("cookie",))
    assert _reason(after) == "wamp.error.no_auth_method"


@ensure
async def test_while_redis_is_away_the_local_throttle_and_cookies_still_hold(two_nodes, redis_server):
    a, _ = two_nodes
    welcome, first = await _login(a.url, "alice-ticket", methods=("cookie", "ticket"))
    cookie = first.http_headers["set-cookie"].split(";", 1)[0]
    redis_server.stop()
    await until(lambda: "lost Redis" in a.log(), 5, "a notices Redis is gone")
    again, _ = await _login(a.url, None, {"Cookie": cookie}, methods=("cookie",))  # bound here: still works
    assert _reason(again) == "welcome"
    answers = [_reason((await _login(a.url, "guess"))[0]) for _ in range(4)]
    assert answers == ["wamp.error.authentication_failed"] * 3 + ["wamp.error.not_authorized"]
