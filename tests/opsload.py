"""A known load for the operator endpoints' tests (/metrics, the status page): what it does, and so
what the counters must say afterwards."""

from __future__ import annotations

import socket

import pytest
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, threads

from realms.secrets import hash_secret
from tests.wampclient import Aborted, answer_ticket, connect, recv_until_closed

EXAMPLE = [{"uri": "com.example.", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]

# Two realms: in realm1 anonymous clients may use com.example.* only, alice logs in by ticket; in
# realm2 every session may send 3 requests per minute.
CONFIG = {"realms": [
    {"uri": "realm1", "auth": {"anonymous": True, "ticket": True},
     "users": {"alice": {"role": "user", "ticket": hash_secret("alice-ticket", iterations=1000)}},
     "roles": {"anonymous": {"permissions": EXAMPLE}, "user": {"permissions": EXAMPLE}}},
    {"uri": "realm2", "limits": {"rate": {"limit": 3, "duration": 60}}},
]}

# What the load does, by name.
CALLS_ADD = 7  # com.example.add, answered
CALLS_MISSING = 2  # com.example.missing: wamp.error.no_such_procedure
CALLS_HANGING = 1  # com.example.slow: the callee never answers (a pending call)
DENIED = 1  # com.secret.x: wamp.error.not_authorized
PUBLISHES = 5  # com.example.news, to 2 subscribers
SUBSCRIBERS = 2
REALM2_PUBLISHES = 4  # acknowledged, on realm2 (rate 3 a minute): the 4th is rate_limited
SESSIONS_REALM1 = 5  # callee, caller, two subscribers, alice
SESSIONS_REALM2 = 1


async def run_load(url: str) -> list:
    """Run the load and return its clients (still joined: sessions and the pending call stay)."""
    callee = await connect(url)
    await callee.register(lambda a, b: a + b, "com.example.add")
    await callee.register(lambda: defer.Deferred(), "com.example.slow")  # never answers
    subscribers = [await connect(url, "msgpack") for _ in range(SUBSCRIBERS)]
    received: list = []
    for s in subscribers:
        await s.subscribe(lambda *a: received.append(a), "com.example.news")
    caller = await connect(url, "msgpack")
    for i in range(CALLS_ADD):
        assert await caller.call("com.example.add", i, 1) == i + 1
    for _ in range(CALLS_MISSING):
        with pytest.raises(ApplicationError, match="no_such_procedure"):
            await caller.call("com.example.missing")
    caller.call("com.example.slow").addErrback(lambda f: None)  # left pending
    with pytest.raises(ApplicationError, match="not_authorized"):
        await caller.call("com.secret.x")
    for i in range(PUBLISHES):
        await caller.publish("com.example.news", i, options=PublishOptions(acknowledge=True))
    alice = await connect(url, authmethods=["ticket"], authid="alice", on_challenge=answer_ticket("alice-ticket"))
    with pytest.raises(Aborted):
        await connect(url, authmethods=["ticket"], authid="alice", on_challenge=answer_ticket("wrong"))
    limited = await connect(url, realm="realm2")
    for i in range(REALM2_PUBLISHES):
        if i < 3:
            await limited.publish("com.other.t", options=PublishOptions(acknowledge=True))
        else:
            with pytest.raises(ApplicationError, match="rate_limited"):
                await limited.publish("com.other.t", options=PublishOptions(acknowledge=True))
    for _ in range(100):  # the EVENTs reach the subscribers after the PUBLISHED
        if len(received) == PUBLISHES * SUBSCRIBERS:
            break
        await sleep(0.02)
    assert len(received) == PUBLISHES * SUBSCRIBERS
    return [callee, *subscribers, caller, alice, limited]


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        return recv_until_closed(s)


async def http_get(port: int, path: str, headers: str = "") -> tuple[int, dict, bytes]:
    """One plain HTTP GET on its own connection: (status, lower-case headers, body)."""
    raw = await threads.deferToThread(
        _exchange, port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body
