"""Listeners on any Twisted server endpoint (issue 14): a unix socket, with TLS or not; bad strings fail the config."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.ssl import Certificate, optionsForClientTLS

from realms.schema import ConfigError
from router.config import parse
from tests.pki import make_pki
from tests.wampclient import connect

ensure = pytest_twisted.ensureDeferred


def _unix_get(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    return reply


async def _call_through(client) -> None:
    await client.register(lambda a, b: a + b, "com.example.add")
    assert await client.call("com.example.add", 2, 3) == 5
    await client.leave()


@ensure
async def test_websocket_and_rawsocket_on_unix_sockets(make_node, tmp_path):
    ws, rs = tmp_path / "ws.sock", tmp_path / "rs.sock"
    make_node(listeners=[{}, {"endpoint": f"unix:{ws}"}, {"type": "rawsocket", "endpoint": f"unix:{rs}"}])
    await _call_through(await connect("ws://localhost:1/ws", unix=str(ws)))
    await _call_through(await connect("rs://localhost:1", "msgpack", unix=str(rs)))
    reply = await threads.deferToThread(_unix_get, str(ws))
    assert reply.startswith(b"HTTP/1.1 200 "), reply


@ensure
async def test_wss_on_a_unix_socket(make_node, tmp_path):
    pki = make_pki(tmp_path / "pki")
    path = tmp_path / "wss.sock"
    make_node(listeners=[{}, {"endpoint": f"unix:{path}", "tls": {"certificate": str(pki.certificate),
                                                                  "key": str(pki.key)}}])
    tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pki.ca_pem))
    await _call_through(await connect("wss://localhost:1/ws", unix=str(path), tls=tls))


@pytest.mark.parametrize(("listener", "words"), [
    ({"endpoint": "carrier-pigeon:coop=3"}, "not a Twisted server endpoint"),
    ({"endpoint": "tcp:port=notanumber"}, "not a Twisted server endpoint"),
    ({"endpoint": "unix:/tmp/x.sock", "port": 9000}, "replaces host and port"),
    ({"endpoint": 5}, "endpoint"),
])
def test_a_bad_endpoint_fails_the_config_with_the_key_path(listener, words):
    with pytest.raises(ConfigError) as e:
        parse({"listeners": [listener]})
    assert str(e.value).startswith("listeners[0].endpoint"), str(e.value)
    assert words in str(e.value), str(e.value)
