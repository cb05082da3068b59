"""Admission limits against reconnect storms (issue 24, point 4), on a real `courtyard start`: a flood
from one address is refused with HTTP 503 before the WebSocket upgrade while clients from other
loopback addresses (127.0.0.2, 127.0.0.3) join normally; rates per address and per node; X-Forwarded-For
from a trusted proxy names the address counted; RawSocket gets the spec's error 4; a per-authid session
cap ABORTs after HELLO; every refusal is counted in /metrics; a reload changes the limits live."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import time

import pytest_twisted
import yaml
from autobahn.twisted.util import sleep
from twisted.internet import threads

from realms.secrets import hash_secret
from tests.routerproc import RouterProcess
from tests.wampclient import Aborted, answer_ticket, connect, with_timeout

ensure = pytest_twisted.ensureDeferred
ADMIN = {"data_dir": None}


def _upgrade(port: int, source: str = "127.0.0.1", forwarded: str | None = None) -> tuple[int, socket.socket]:
    """A WebSocket opening handshake from `source`: (the HTTP status, the socket, still open)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"X-Forwarded-For: {forwarded}\r\n" if forwarded else ""
    s.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n"
              f"{extra}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, s


def _flood(port: int, n: int, source: str = "127.0.0.1", forwarded: str | None = None) -> tuple[list, list]:
    """`n` handshakes at once from one address: (statuses, the open sockets)."""
    statuses, sockets = [], []
    for _ in range(n):
        status, s = _upgrade(port, source, forwarded)
        statuses.append(status)
        sockets.append(s)
    return statuses, sockets


def _close(sockets: list) -> None:
    for s in sockets:
        s.close()


def _metrics(port: int) -> str:
    """/metrics, scraped from 127.0.0.5 (the flooding address is itself refused, scrapes included)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=("127.0.0.5", 0))
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _refusals(port: int, reason: str) -> int:
    for line in _metrics(port).splitlines():
        if line.startswith(f'courtyard_refusals_total{{realm="",reason="{reason}"}}'):
            return int(float(line.split()[-1]))
    return 0


@ensure
async def test_a_flood_from_one_address_is_refused_while_others_join(tmp_path):
    router = RouterProcess(tmp_path, {"limits": {"max_connections_per_address": 20}, "admin": ADMIN}).start()
    held: list = []
    try:
        statuses, held = await threads.deferToThread(_flood, router.port, 200)
        assert statuses.count(101) == 20 and statuses.count(503) == 180, statuses
        # meanwhile other addresses join, register and call as usual
        others = [await connect(router.url, bind=source) for source in ("127.0.0.2", "127.0.0.3")]
        await others[0].register(lambda x: x * 2, "com.example.double")
        assert await others[1].call("com.example.double", 21) == 42
        # the flooding address itself: one more is refused, one closed makes room again
        status, s = await threads.deferToThread(_upgrade, router.port)
        assert status == 503
        s.close()
        held.pop(statuses.index(101)).close()  # an admitted one ends
        await sleep(0.3)
        status, s = await threads.deferToThread(_upgrade, router.port)
        assert status == 101
        held.append(s)
        assert await threads.deferToThread(_refusals, router.port, "max_connections_per_address") == 181
        log = router.log()
        assert log.count("by limits.max_connections_per_address") == 1, log  # one line, not one per connection
        for c in others:
            c.leave()
    finally:
        _close(held)
        router.stop()


@ensure
async def test_connection_rates_per_address_and_per_node(tmp_path):
    router = RouterProcess(tmp_path, {"limits": {"connections_per_second_per_address": 5}, "admin": ADMIN}).start()
    try:
        statuses, held = await threads.deferToThread(_flood, router.port, 30)
        _close(held)
        assert 5 <= statuses.count(101) <= 8 and statuses.count(503) >= 22, statuses  # a second's worth, then ~5/s
        client = await connect(router.url, bind="127.0.0.2")  # another address has its own bucket
        client.leave()
        await sleep(1.1)  # refilled
        status, s = await threads.deferToThread(_upgrade, router.port)
        s.close()
        assert status == 101
        assert await threads.deferToThread(_refusals, router.port, "connections_per_second_per_address") >= 22
    finally:
        router.stop()
    (tmp_path / "node").mkdir()
    router = RouterProcess(tmp_path / "node", {"limits": {"connections_per_second": 10}, "admin": ADMIN}).start()
    try:
        statuses = []
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):  # the node's rate counts every address
            got, held = await threads.deferToThread(_flood, router.port, 10, source)
            _close(held)
            statuses += got
        assert 10 <= statuses.count(101) <= 13 and statuses.count(503) >= 17, statuses
        await sleep(0.3)
        assert await threads.deferToThread(_refusals, router.port, "connections_per_second") >= 17
    finally:
        router.stop()


@ensure
async def test_the_address_counted_behind_a_trusted_proxy_is_the_forwarded_one(tmp_path):
    router = RouterProcess(tmp_path, {"listeners": [{"trusted_proxies": ["127.0.0.1"]}],
                                      "limits": {"max_connections_per_address": 2}, "admin": ADMIN}).start()
    held: list = []
    try:
        statuses, held = await threads.deferToThread(_flood, router.port, 3, "127.0.0.1", "10.0.0.7")
        assert statuses == [101, 101, 503], statuses
        more_statuses, more = await threads.deferToThread(_flood, router.port, 20, "127.0.0.1", "10.0.0.7")
        held += more
        assert set(more_statuses) == {503}
        assert "refusing WebSocket" not in router.log()  # the flood is admission's one line, not 21
        status, s = await threads.deferToThread(_upgrade, router.port, "127.0.0.1", "10.0.0.8")  # another client
        held.append(s)
        assert status == 101
        # from an untrusted peer the header does not count: its own address is
        statuses, more = await threads.deferToThread(_flood, router.port, 3, "127.0.0.2", "10.0.0.9")
        held += more
        assert statuses == [101, 101, 503], statuses
    finally:
        _close(held)
        router.stop()


def test_rawsocket_connections_past_the_limit_get_error_4(tmp_path):
    router = RouterProcess(tmp_path, {"listeners": [{"type": "rawsocket"}],
                                      "limits": {"max_connections_per_address": 1}, "admin": ADMIN}).start()
    try:
        first = socket.create_connection(("127.0.0.1", router.port), timeout=5)
        first.sendall(bytes((0x7F, 0xF1, 0, 0)))  # max length 2^24, JSON
        reply = first.recv(4)
        assert reply[0] == 0x7F and reply[1] & 0x0F == 1, reply  # accepted: serializer 1 (JSON), no error
        second = socket.create_connection(("127.0.0.1", router.port), timeout=5)
        assert second.recv(4) == bytes((0x7F, 4 << 4, 0, 0))  # the spec's "maximum connection count reached"
        assert second.recv(4) == b""
        second.close()
        other = socket.create_connection(("127.0.0.1", router.port), timeout=5, source_address=("127.0.0.2", 0))
        other.sendall(bytes((0x7F, 0xF1, 0, 0)))
        reply = other.recv(4)
        assert reply[0] == 0x7F and reply[1] & 0x0F == 1, reply  # accepted: serializer 1 (JSON), no error
        other.close()
        first.close()
    finally:
        router.stop()


@ensure
async def test_sessions_per_authid_are_capped_after_hello(tmp_path):
    realm = {"uri": "realm1", "auth": {"anonymous": {"enabled": True, "authrole": "anonymous"}, "ticket": True},
             "users": {"alice": {"ticket": hash_secret("pw", iterations=1000), "role": "user"}},
             "roles": {r: {"permissions": [{"uri": "", "match": "prefix", "allow": ["call", "register"]}]}
                       for r in ("user", "anonymous")}}
    router = RouterProcess(tmp_path, {"realms": [realm], "limits": {"max_sessions_per_authid": 2},
                                      "admin": ADMIN}).start()
    try:
        def alice():
            return connect(router.url, authmethods=["ticket"], authid="alice", on_challenge=answer_ticket("pw"))

        first, second = await alice(), await alice()
        try:
            await alice()
            raise AssertionError("a third session of alice joined")
        except Aborted as e:
            assert e.reason == "courtyard.error.too_many_sessions_per_authid"
            assert "limits.max_sessions_per_authid" in e.details.message
        anonymous = [await connect(router.url) for _ in range(3)]  # anonymous sessions are not counted
        first.leave()
        await with_timeout(first.left)
        await sleep(0.1)
        third = await alice()  # one left: room for another
        assert await threads.deferToThread(_refusals, router.port, "max_sessions_per_authid") == 1
        # a reload lifts the cap live
        config = yaml.safe_load(router.config_path.read_text())
        config["limits"] = {"max_sessions_per_authid": 5}
        router.config_path.write_text(yaml.safe_dump(config))
        offset = len(router.log())
        router.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded" not in router.log()[offset:] and time.monotonic() < deadline:
            await sleep(0.05)
        fourth = await alice()
        for c in (second, third, fourth, *anonymous):
            c.leave()
    finally:
        router.stop()
