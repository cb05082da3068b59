"""A peer that stops reading, as the flow-control tests build one (issue 11): listeners on both
transports with a small outgoing budget, a joined raw peer with small kernel buffers on both ends, and
many client frames in one write."""

from __future__ import annotations

import socket

import msgpack
import pytest

from tests.wampclient import RawSocketPeer, raw_connect, rawsocket_connect

BUDGET = 256 * 1024
RESERVE = max(64 * 1024, BUDGET // 4)  # router.transport.flow.reserve
KERNEL_BUFFER = 32 * 1024  # per socket and direction (Linux doubles it)
TRANSPORTS = pytest.mark.parametrize("transport", ["websocket", "rawsocket"])


def listeners(**options) -> list[dict]:
    """A WebSocket and a RawSocket listener, each with BUDGET as its outgoing buffer, and `options`."""
    return [{"type": "websocket", "max_outgoing_buffer": BUDGET, **options},
            {"type": "rawsocket", "max_outgoing_buffer": BUDGET, **options}]


def rs_url(node) -> str:
    """The node's RawSocket listener (the second of `listeners()`)."""
    return f"rs://127.0.0.1:{node.ports[1].getHost().port}"


async def peer_on(node, transport: str, roles: dict | None = None):
    """A joined raw peer (msgpack) on the given transport, its connection inside the router and its
    session record (which outlives the session: its msgs_in says how far the router has read)."""
    if transport == "rawsocket":
        peer = await rawsocket_connect(rs_url(node), "msgpack")  # announces 2^24 octets
    else:
        peer = await raw_connect(node.url, "msgpack")
    welcome = await peer.hello(roles=roles)
    assert welcome[0] == 2, welcome
    session = node.table.fetch(welcome[1])
    conn = session.transport.wire
    # Small kernel buffers on both ends, so that what a stalled peer does not read stays in the router's
    # own buffer: with the kernel's autotuned megabytes, Twisted's buffer could drain into them after a
    # flood and end the episode the test is looking at (seen under CI load).
    conn.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER)
    peer.proto.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
    return peer, conn, session


def send_many(peer, msgs: list) -> None:
    """Many messages in one write: client frames built here (a WebSocket client's with a zero mask),
    so that a flood of small requests costs the test little and the router all of its work."""
    frames = []
    for msg in msgs:
        payload = msgpack.packb(msg, use_bin_type=True)
        n = len(payload)
        if isinstance(peer, RawSocketPeer):
            frames.append(bytes((0,)) + n.to_bytes(3, "big") + payload)
        elif n < 126:
            frames.append(bytes((0x82, 0x80 | n, 0, 0, 0, 0)) + payload)
        else:
            frames.append(bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big") + bytes(4) + payload)
    peer.proto.transport.write(b"".join(frames))
