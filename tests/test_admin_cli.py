"""`courtyard admin` against a real `courtyard start` process (issue 15 item 2): every admin procedure
has a sub-command answering in words (or JSON), ticket and cryptosign logins, and every mistake is one
line on stderr with exit 2 (usage) or 1 (the router said no, or is not there), never a traceback."""

from __future__ import annotations

import json
import subprocess

import pytest
import pytest_twisted
from nacl.signing import SigningKey
from twisted.internet import threads

from tests.helpers.admin import ADMIN, KEY, cli
from tests.routerproc import RouterProcess
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred
@pytest.fixture
def router(tmp_path):
    r = RouterProcess(tmp_path, {"admin": ADMIN}).start()
    yield r
    r.stop()


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout.strip()


@ensure
async def test_every_action_answers_in_words(router):
    async def say(*argv: str) -> str:
        return _ok(await threads.deferToThread(cli, *argv, url=router.url))

    assert await say("realms", "list") == "courtyard.admin\nrealm1"
    assert await say("realms", "create", "shop", "--definition", '{"auth": {"ticket": true}}') == "realm shop created"
    assert await say("realms", "update", "shop", "--definition", '{"limits": {"idle_timeout": 300}}') == \
        "realm shop updated"
    assert '"idle_timeout": 300' in await say("realms", "get", "shop")
    assert await say("users", "add", "shop", "bob", "--role", "customer", "--secret", "bob-pw") == \
        "user bob added to realm shop (role customer, ticket)"
    assert await say("users", "update", "shop", "bob", "--role", "vip") == \
        "user bob of realm shop updated (role vip, ticket)"
    assert await say("users", "list", "shop") == "bob"
    assert "vip" in await say("users", "get", "shop", "bob")
    assert await say("sessions", "wipe") == "wiped 0 expired sessions"

    bob = await connect(router.url, realm="shop", authmethods=["ticket"], authid="bob", on_challenge=lambda c: "bob-pw")
    anon = [await connect(router.url) for _ in range(2)]
    sid = anon[0].welcome.session
    assert await say("sessions", "count", "--realm", "realm1") == "2"
    table = (await say("sessions", "list", "--realm", "realm1")).splitlines()
    assert table[0].split() == ["id", "authid", "authrole", "authmethod", "peer", "agent", "idle", "node"]
    assert sorted(int(line.split()[0]) for line in table[1:]) == sorted(c.welcome.session for c in anon)
    assert all(line.split()[3] == "anonymous" and line.split()[4].startswith("127.0.0.1:") for line in table[1:])
    table = (await say("sessions", "list", "--realm", "shop", "--authid-filter", "bob")).splitlines()
    assert [line.split()[:3] for line in table[1:]] == [[str(bob.welcome.session), "bob", "vip"]]
    ids = json.loads(await say("--json", "sessions", "list", "--realm", "realm1"))  # --json: the ids, for scripts
    assert sorted(ids) == sorted(c.welcome.session for c in anon)
    assert "None" not in await say("sessions", "get", str(bob.welcome.session))
    assert await say("sessions", "set-data", str(sid), '{"tier": "gold"}') == f'session {sid} data: {{"tier": "gold"}}'
    assert '"tier": "gold"' in await say("sessions", "get", str(sid))
    assert await say("sessions", "activity", "realm1", "60") == "2 sessions active in the last 60 s"
    assert await say("sessions", "kill-by-authid", "shop", "bob", "--message", "bye bob") == "killed 1 session"
    assert (await with_timeout(bob.left)).message == "bye bob"
    assert await say("sessions", "kill", str(sid), "--reason", "com.example.out") == "killed 1 session"
    assert (await with_timeout(anon[0].left)).reason == "com.example.out"
    assert await say("sessions", "kill-all", "realm1") == "killed 1 session"
    assert (await with_timeout(anon[1].left)).reason == "wamp.close.killed"
    assert await say("users", "remove", "shop", "bob") == "user bob removed from realm shop (killed 0 sessions)"
    assert await say("realms", "delete", "shop") == "realm shop deleted (killed 0 sessions)"
    assert json.loads(await say("--json", "realms", "list")) == ["courtyard.admin", "realm1"]
    assert "Traceback" not in router.log()


def test_cryptosign_login_and_options_after_the_action(router):
    login = ("--authid", "robot", "--key", KEY.encode().hex())
    assert _ok(cli("realms", "list", url=router.url, login=login)) == "courtyard.admin\nrealm1"
    assert json.loads(_ok(cli("realms", "list", "--json", "--url", router.url, login=login))) == \
        ["courtyard.admin", "realm1"]
    assert "admin robot called" not in router.log()  # a read: not logged as a change
    stranger = SigningKey.generate().encode().hex()
    r = cli("realms", "list", url=router.url, login=("--authid", "robot", "--key", stranger))
    assert r.returncode == 1 and "wamp.error.authentication_failed" in r.stderr


@pytest.mark.parametrize("argv", [
    ("sessions", "kill"),
    ("sessions", "kill", "abc"),
    ("sessions", "activity", "realm1", "soon"),
    ("sessions", "set-data", "1", "{oops"),
    ("sessions", "set-data", "1", "[1]"),
    ("realms", "create", "x", "--definition", "{bad"),
    ("realms", "update", "x"),
    ("realms", "lis"),
    ("users", "add", "shop", "bob"),
    ("users", "update", "shop"),
    (),
    ("--url", "garbage", "realms", "list"),
    ("--url", "http://127.0.0.1:8080/ws", "realms", "list"),
    ("--url", "ws://127.0.0.1:99999/ws", "realms", "list"),
    ("--key", "zz", "realms", "list"),
])
def test_usage_mistakes_are_one_line_and_exit_2(argv):
    r = cli(*argv)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("courtyard admin") and r.stdout == ""


def test_no_credential_is_exit_2():
    r = cli("realms", "list", login=())
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "courtyard admin: no credential: give --ticket (or COURTYARD_ADMIN_TICKET) or --key (or COURTYARD_ADMIN_KEY)"]


def test_router_answers_and_absent_routers_are_one_line_and_exit_1(router):
    cases = [
        (cli("sessions", "kill", "12345", url=router.url), "wamp.error.no_such_session: no session 12345"),
        (cli("realms", "get", "nope", url=router.url), "courtyard.error.no_such_realm"),
        (cli("users", "add", "realm1", "eve", "--role", "anonymous", "--secret", "x", url=router.url),
         "wamp.error.invalid_argument: user.ticket: ticket is not enabled"),
        (cli("realms", "list", url=router.url, login=("--authid", "root", "--ticket", "wrong")),
         "wamp.error.authentication_failed"),
        (cli("realms", "list", url="ws://localhost/ws"), "cannot connect to ws://localhost/ws"),
    ]
    for r, text in cases:
        assert r.returncode == 1, r.stdout + r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("courtyard admin: ") and text in r.stderr, r.stderr
