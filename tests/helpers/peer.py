"""The raw WAMP peer: a WebSocket client that sends and receives WAMP messages as lists, for tests
that must see the exact messages (tests/wampclient.py's RawPeer; its RawSocket twin is
RawSocketPeer there). Autobahn clients, for tests that need not: tests/wampclient.py's `connect`."""

from __future__ import annotations

from autobahn.twisted.util import sleep

from router.wamp import REGISTER, REGISTERED
from tests.wampclient import RawPeer, raw_connect


async def joined(node, serializer: str = "json", roles: dict | None = None, realm: str = "realm1") -> RawPeer:
    """A raw peer with a session in `realm` on `node` (anything with a `url`); `roles` default to every
    client role without Advanced Profile features."""
    peer = await raw_connect(node.url, serializer)
    welcome = await peer.hello(realm, roles=roles)
    assert welcome[0] == 2, welcome
    return peer


# Caller and callee without Advanced Profile features: what the dealer tests' peers announce.
PLAIN = {"caller": {}, "callee": {}}


async def rpc_joined(node, serializer: str = "json", roles: dict | None = None) -> RawPeer:
    """`joined`, announcing only caller and callee (PLAIN) unless `roles` says otherwise."""
    return await joined(node, serializer, roles or PLAIN)


async def registered(peer: RawPeer, procedure: str, options: dict | None = None, request: int = 1) -> int:
    """REGISTER and expect REGISTERED: the registration id."""
    peer.send([REGISTER, request, options or {}, procedure])
    reply = await peer.recv()
    assert reply[:2] == [REGISTERED, request], reply
    return reply[2]


async def quiet(peer: RawPeer, seconds: float = 0.2) -> None:
    """Nothing arrives for a while."""
    await sleep(seconds)
    assert peer.inbox.pending == [], peer.inbox.pending
