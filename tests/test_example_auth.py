"""config/examples/auth.yaml does what its comments say: each user logs in with the secret written
there (alice by ticket, carol by WAMP-CRA, dave by cryptosign with the private key in the comment),
roles allow what they list, and the client program in the comment runs as it is against the file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.exception import ApplicationError
from twisted.internet import threads

from tests.routerproc import RouterProcess
from tests.wampclient import answer_ticket, answer_wampcra, connect

ensure = pytest_twisted.ensureDeferred
EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "examples" / "auth.yaml"
TEXT = EXAMPLE.read_text()
PRIVATE = re.search(r"private key .*?\n#\s+([0-9a-f]{64})\n", TEXT, re.S).group(1)


def _client_program() -> str:
    """The Python program in the example's comment, without the comment marks."""
    block = TEXT[TEXT.index("#   from autobahn"):TEXT.index('run([dave], log_level="info")') + 29]
    return "\n".join(line[4:] for line in block.splitlines())


@ensure
async def test_every_user_logs_in_with_the_secret_in_the_comment(make_node):
    node = make_node(**{k: v for k, v in yaml.safe_load(TEXT).items() if k != "listeners"})
    alice = await connect(node.url, realm="shop", authmethods=["ticket"], authid="alice",
                          on_challenge=answer_ticket("alice-ticket"))
    carol = await connect(node.url, realm="shop", authmethods=["wampcra"], authid="carol",
                          on_challenge=answer_wampcra("carol-secret"))
    key = CryptosignKey.from_bytes(bytes.fromhex(PRIVATE))
    dave = await connect(node.url, "msgpack", realm="shop", authmethods=["cryptosign"], authid="dave",
                         authextra={"pubkey": key.public_key()}, on_challenge=key.sign_challenge)
    guest = await connect(node.url, realm="shop")
    assert [(c.welcome.authid, c.welcome.authrole) for c in (alice, carol, dave)] == \
        [("alice", "customer"), ("carol", "admin"), ("dave", "backend")]
    assert guest.welcome.authrole == "guest"
    await dave.register(lambda: ["tea"], "shop.catalog.list")
    assert await guest.call("shop.catalog.list") == ["tea"]  # guests may read the catalog ...
    with pytest.raises(ApplicationError) as e:
        await guest.register(lambda: None, "shop.catalog.fake")  # ... not serve it
    assert e.value.error == "wamp.error.not_authorized"
    for c in (alice, carol, dave, guest):
        c.leave()


def test_the_cryptosign_client_in_the_comment_runs(tmp_path):
    router = RouterProcess(tmp_path, yaml.safe_load(TEXT)).start()
    try:
        program = tmp_path / "dave.py"
        program.write_text(_client_program().replace("8080", str(router.port)))
        r = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=60)
    finally:
        router.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    printed = [line.split(" ", 1)[1] for line in r.stdout.splitlines()]  # after autobahn's time stamps
    assert "joined shop as dave with role backend" in printed and "catalog: ['tea', 'cake']" in printed, r.stdout


@ensure
async def test_the_example_passes_check_config(tmp_path):
    r = await threads.deferToThread(subprocess.run, [sys.executable, "-m", "router.cli", "check-config", "-c",
                                                     str(EXAMPLE)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
