"""Listeners on any Twisted server endpoint (issue 14): a unix socket, with TLS or not; bad strings fail the config."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

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


def test_systemd_socket_activation(tmp_path):
    """The router adopts a listening socket passed as systemd does (fd 3, LISTEN_FDS, LISTEN_PID)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = tmp_path / "router.yaml"
    config.write_text("listeners: [{endpoint: 'systemd:domain=INET:index=0'}]\nadmin: {data_dir: null}\n")
    log = tmp_path / "router.log"
    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "courtyard"}  # systemd 227+ sets both
    argv = ["sh", "-c", 'LISTEN_PID=$$ exec "$0" -m router.cli start -c "$1"', sys.executable, str(config)]
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, pass_fds=(3,),
                                preexec_fn=lambda: os.dup2(sock.fileno(), 3))
    sock.close()
    try:
        deadline = time.monotonic() + 15
        while "started in" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert "started in" in log.read_text(), log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        proc.kill()
        proc.wait(10)
    # without systemd's sockets, the config check says so
    r = subprocess.run([sys.executable, "-m", "router.cli", "check-config", "-c", str(config)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "listeners[0].endpoint: no inherited socket" in r.stderr, r.stderr
