"""TLS listeners (issue 14): wss:// and RawSocket over TLS with a throwaway CA; bad files fail the config."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from realms.schema import ConfigError
from realms.secrets import hash_secret
from router.config import parse
from tests.pki import make_pki
from tests.routerproc import RouterProcess
from tests.wampclient import Aborted, connect, recv_until_closed, with_timeout

ensure = pytest_twisted.ensureDeferred


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("other"), "other")


def _tls(pki) -> dict:
    return {"certificate": str(pki.certificate), "key": str(pki.key)}


def _trusting(pki):
    return optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pki.ca_pem))


async def _call_through(client) -> None:
    await client.register(lambda a, b: a + b, "com.example.add")
    assert await client.call("com.example.add", 2, 3) == 5
    await client.leave()


@ensure
async def test_a_wss_client_trusting_the_ca_joins_and_calls(make_node, pki):
    node = make_node(listeners=[{"tls": _tls(pki)}])
    client = await connect(f"wss://localhost:{node.port}/ws", tls=_trusting(pki))
    assert client.welcome.realm == "realm1"
    await _call_through(client)


class _Watcher(protocol.Protocol):
    def __init__(self) -> None:
        self.lost: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")

    def connectionLost(self, reason) -> None:
        self.lost.callback(reason.value)  # the exception, as a result (not an errback)


@pytest.mark.parametrize("kind", ["websocket", "rawsocket"])
@ensure
async def test_a_client_not_trusting_the_ca_fails_the_handshake(make_node, pki, other_pki, kind):
    node = make_node(listeners=[{"type": kind, "tls": _tls(pki)}])
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        watcher = _Watcher()
        ep = endpoints.wrapClientTLS(_trusting(other_pki),
                                     endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", node.port))
        await with_timeout(endpoints.connectProtocol(ep, watcher))
        reason = await with_timeout(watcher.lost)
        assert "certificate verify failed" in str(reason), reason
        await sleep(0.1)
    finally:
        globalLogPublisher.removeObserver(events.append)
    # the client's mistake is one info line in the router's log, not an error
    assert [formatEvent(e) for e in events if e.get("log_level", LogLevel.info) > LogLevel.info] == []
    assert [formatEvent(e) for e in events if "TLS with" in formatEvent(e)] != []
    # and the listener still serves a client that trusts it
    url = f"rss://localhost:{node.port}" if kind == "rawsocket" else f"wss://localhost:{node.port}/ws"
    await _call_through(await connect(url, tls=_trusting(pki)))


def _plain_request(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return recv_until_closed(s)


@ensure
async def test_plain_http_to_a_tls_listener_gets_no_answer_and_the_listener_lives(make_node, pki):
    node = make_node(listeners=[{"tls": _tls(pki)}])
    reply = await threads.deferToThread(_plain_request, node.port)
    assert not reply.startswith(b"HTTP"), reply
    await _call_through(await connect(f"wss://localhost:{node.port}/ws", tls=_trusting(pki)))


@ensure
async def test_rawsocket_over_tls(make_node, pki, serializer):
    node = make_node(listeners=[{"type": "rawsocket", "tls": _tls(pki)}])
    client = await connect(f"rss://localhost:{node.port}", serializer, tls=_trusting(pki))
    await _call_through(client)


def test_missing_or_bad_files_fail_the_config_with_the_key_path(pki, other_pki, tmp_path):
    def check(tls: dict, key_path: str, words: str) -> None:
        with pytest.raises(ConfigError) as e:
            parse({"listeners": [{}, {"port": 0, "tls": tls}]})
        assert str(e.value).startswith(f"listeners[1].tls{key_path}:"), str(e.value)
        assert words in str(e.value), str(e.value)

    check({"certificate": str(tmp_path / "nope.pem"), "key": str(pki.key)}, ".certificate",
          "nope.pem: No such file or directory")
    check({"certificate": str(pki.certificate)}, ".key", "required")
    unreadable = tmp_path / "secret.pem"
    unreadable.write_bytes(pki.key.read_bytes())
    unreadable.chmod(0)
    try:
        open(unreadable).close()  # root reads anything: then this case cannot be shown
    except PermissionError:
        check({"certificate": str(pki.certificate), "key": str(unreadable)}, ".key", "Permission denied")
    check({"certificate": str(pki.key), "key": str(pki.key)}, ".certificate", "no PEM certificate")
    check({"certificate": str(pki.certificate), "key": str(pki.certificate)}, ".key", "no PEM private key")
    check({"certificate": str(pki.certificate), "key": str(other_pki.key)}, ".key", "does not match")
    check({**_tls(pki), "ca_certificates": [str(tmp_path / "ca.pem")]}, ".ca_certificates[0]", "cannot read")
    check({**_tls(pki), "ciphers": "NOSUCHCIPHER"}, ".ciphers", "NOSUCHCIPHER")
    check({**_tls(pki), "colour": "red"}, ".colour", "unknown key")
    assert parse({"listeners": [{"tls": {**_tls(pki), "ciphers": "ECDHE+AESGCM"}}]}).listeners[0].tls.options


def test_relative_tls_paths_are_taken_from_the_config_files_directory(pki, tmp_path, monkeypatch):
    import shutil

    from router.config import load

    conf = tmp_path / "etc"
    (conf / "tls").mkdir(parents=True)
    for f in (pki.certificate, pki.key, pki.ca):
        shutil.copy(f, conf / "tls" / f.name)
    (conf / "courtyard.yaml").write_text(
        f"listeners:\n  - port: 0\n    tls: {{certificate: tls/{pki.certificate.name}, key: tls/{pki.key.name},"
        f" ca_certificates: [tls/{pki.ca.name}]}}\n")
    monkeypatch.chdir(tmp_path)  # elsewhere: the paths are not the working directory's
    tls = load(conf / "courtyard.yaml").listeners[0].tls
    assert (tls.certificate, tls.ca_certificates) == (
        str(conf / "tls" / pki.certificate.name), [str(conf / "tls" / pki.ca.name)])


@ensure
async def test_client_certificates_are_required_when_ca_certificates_are_given(make_node, pki, other_pki):
    node = make_node(listeners=[{"tls": {**_tls(pki), "ca_certificates": [str(other_pki.ca)]}}])
    # without a client certificate: refused in the TLS handshake
    watcher = _Watcher()
    ep = endpoints.wrapClientTLS(_trusting(pki), endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", node.port))
    await with_timeout(endpoints.connectProtocol(ep, watcher))
    reason = await with_timeout(watcher.lost)
    assert "certificate" in str(reason), reason  # 'tlsv13 alert certificate required'
    assert node.table.size() == 0
    # with one the CA signs: joins
    from twisted.internet.ssl import PrivateCertificate

    mine = PrivateCertificate.loadPEM(other_pki.certificate.read_bytes() + other_pki.key.read_bytes())
    opts = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pki.ca_pem), clientCertificate=mine)
    await _call_through(await connect(f"wss://localhost:{node.port}/ws", tls=opts))


def _admin_cli(url: str, *argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "router.cli", "admin", "--url", url, "--authid", "root", "--ticket", "root-pw", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_the_admin_cli_over_wss_verifies_the_certificate(tmp_path, pki, other_pki):
    admin = {"users": {"root": {"ticket": hash_secret("root-pw", iterations=1000)}}, "data_dir": None}
    router = RouterProcess(tmp_path, {"listeners": [{"tls": _tls(pki)}], "admin": admin}).start()
    url = f"wss://localhost:{router.port}/ws"
    try:
        r = _admin_cli(url, "--cafile", str(pki.ca), "--json", "realms", "list")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == ["courtyard.admin", "realm1"]
        for argv in (["--cafile", str(other_pki.ca)], []):  # another CA; the system's CAs
            r = _admin_cli(url, *argv, "realms", "list")
            assert r.returncode == 1, (argv, r.stdout, r.stderr)
            assert r.stderr.count("\n") == 1 and "TLS: certificate verify failed" in r.stderr, (argv, r.stderr)
        r = _admin_cli(url, "--cafile", str(tmp_path / "nope.pem"), "realms", "list")
        assert r.returncode == 2 and "nope.pem: No such file or directory" in r.stderr, r.stderr
        r = _admin_cli(f"ws://127.0.0.1:{router.port}/ws", "realms", "list")  # plain to a TLS listener
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    finally:
        router.stop()


@ensure
async def test_a_wss_subscriber_that_stops_reading_gets_the_slow_consumer_policy(make_node, pki):
    """TLS adds a layer between the router and the socket: the outgoing budget must still see the
    socket back up (Twisted's TLS protocol passes the pause through to the router's producer)."""
    budget = 256 * 1024
    node = make_node(listeners=[{"tls": _tls(pki), "max_outgoing_buffer": budget}])
    url = f"wss://localhost:{node.port}/ws"
    subscriber = await connect(url, tls=_trusting(pki))
    await subscriber.subscribe(lambda *a: None, "com.example.firehose")
    conn = node.table.fetch(subscriber.welcome.session).transport.wire
    subscriber._transport.transport.pauseProducing()  # the client stops reading its TLS socket
    publisher = await connect(url, tls=_trusting(pki))
    blob = "e" * (512 * 1024)
    for _ in range(60):  # 30 MB, 120 times the budget
        await publisher.publish("com.example.firehose", blob, options=PublishOptions(acknowledge=True))
        tcp = conn.transport.transport  # under the TLS layer
        assert len(tcp.dataBuffer) + tcp._tempDataLen < 2 * 1024 * 1024
    assert conn.dropped_events > 0
    await publisher.leave()


def _silent(port: int) -> float:
    """Connect, send nothing; seconds until the router closes."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    return time.monotonic() - t0


@pytest.mark.parametrize("kind", ["websocket", "rawsocket"])
@ensure
async def test_a_connection_that_never_starts_tls_is_closed_by_hello_timeout(make_node, pki, kind):
    node = make_node(listeners=[{"type": kind, "tls": _tls(pki), "hello_timeout": 1}])
    took = await threads.deferToThread(_silent, node.port)
    assert took < 4, took
    assert node.connections == 0


def _bound_signer(key, channel: str | None = "tls-unique", tamper: bool = False):
    """An Autobahn cryptosign answer bound to the session's own TLS channel (autobahn's tls-unique)."""
    from autobahn.twisted.util import transport_channel_id

    def sign(challenge, session):
        cid = transport_channel_id(session._transport.transport, False, "tls-unique")
        if tamper:  # a signature made for another TLS connection, relayed by a man in the middle
            cid = bytes(32)
        return key.sign_challenge(challenge, channel_id=cid, channel_id_type=channel)

    sign.wants_session = True
    return sign


@ensure
async def test_cryptosign_with_tls_unique_channel_binding(make_node, pki):
    from autobahn.wamp.cryptosign import CryptosignKey

    from tests.helpers.realms import auth_realm

    key = CryptosignKey.from_bytes(bytes(range(32)))
    node = make_node(**auth_realm(), listeners=[{"tls": _tls(pki)}, {"port": 0}])
    url = f"wss://localhost:{node.port}/ws"
    bound = {"pubkey": key.public_key(), "channel_binding": "tls-unique"}
    c = await connect(url, tls=_trusting(pki), authmethods=["cryptosign"], authextra=bound,
                      on_challenge=_bound_signer(key))
    assert c.welcome.authid == "dave"
    await c.leave()
    with pytest.raises(Aborted) as e:  # signed for another channel: refused
        await connect(url, tls=_trusting(pki), authmethods=["cryptosign"], authextra=bound,
                      on_challenge=_bound_signer(key, tamper=True))
    assert e.value.reason == "wamp.error.authentication_failed"
    plain = f"ws://127.0.0.1:{node.ports[1].getHost().port}/ws"
    with pytest.raises(Aborted) as e:  # binding asked for where there is no TLS
        await connect(plain, authmethods=["cryptosign"], authextra=bound, on_challenge=lambda ch: "")
    assert e.value.reason == "wamp.error.not_authorized" and "TLS" in str(e.value)
