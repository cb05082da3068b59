"""Authentication methods and role-based authorization over real sockets (issue 5)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from nacl.signing import SigningKey

from router.config import ConfigError, parse
from tests.helpers.realms import CRYPTO_KEY, auth_realm
from tests.wampclient import Aborted, answer_ticket, answer_wampcra, connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred

@ensure
async def test_ticket_success_fills_the_session(make_node, serializer):
    node = make_node(**auth_realm())
    c = await connect(node.url, serializer, authmethods=["ticket"], authid="alice",
                      on_challenge=answer_ticket("alice-ticket"))
    w = c.welcome
    assert (w.authid, w.authrole, w.authmethod, w.authprovider) == ("alice", "user", "ticket", "static")
    d = node.table.to_details_map(w.session)
    assert (d["authid"], d["authrole"], d["authmethod"]) == ("alice", "user", "ticket")


@ensure
async def test_wrong_ticket_and_unknown_user_look_the_same(make_node):
    node = make_node(**auth_realm())
    with pytest.raises(Aborted) as wrong:
        await connect(node.url, authmethods=["ticket"], authid="alice", on_challenge=answer_ticket("nope"))
    with pytest.raises(Aborted) as unknown:
        await connect(node.url, authmethods=["ticket"], authid="mallory", on_challenge=answer_ticket("nope"))
    assert wrong.value.reason == unknown.value.reason == "wamp.error.authentication_failed"
    assert wrong.value.details.message == unknown.value.details.message
    assert node.table.size() == 0


@ensure
async def test_wampcra_unsalted_and_salted(make_node, serializer):
    node = make_node(**auth_realm())
    bob = await connect(node.url, serializer, authmethods=["wampcra"], authid="bob",
                        on_challenge=answer_wampcra("bob-secret"))
    assert (bob.welcome.authid, bob.welcome.authmethod) == ("bob", "wampcra")
    carol = await connect(node.url, serializer, authmethods=["wampcra"], authid="carol",
                          on_challenge=answer_wampcra("carol-secret"))
    assert (carol.welcome.authid, carol.welcome.authrole) == ("carol", "admin")
    with pytest.raises(Aborted) as e:
        await connect(node.url, serializer, authmethods=["wampcra"], authid="carol",
                      on_challenge=answer_wampcra("guess"))
    assert e.value.reason == "wamp.error.authentication_failed"


@ensure
async def test_wampcra_unknown_user_gets_a_salted_challenge_too(make_node):
    node = make_node(**auth_realm())
    challenges = []
    for authid in ("carol", "nobody", "nobody"):
        peer = await raw_connect(node.url)
        peer.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": authid}])
        msg = await peer.recv()
        assert msg[0] == 4 and msg[1] == "wampcra"
        challenges.append(msg[2])
        assert json.loads(msg[2]["challenge"])["authid"] == authid
    assert set(challenges[0]) == set(challenges[1])  # same shape: salt, iterations, keylen
    assert challenges[1]["salt"] == challenges[2]["salt"]  # stable per authid, like a real user's


@ensure
async def test_cryptosign(make_node, serializer):
    node = make_node(**auth_realm())
    pub = CRYPTO_KEY.verify_key.encode().hex()

    def sign(challenge):
        return CRYPTO_KEY.sign(bytes.fromhex(challenge.extra["challenge"])).hex()  # signature + challenge

    c = await connect(node.url, serializer, authmethods=["cryptosign"], authid="dave",
                      authextra={"pubkey": pub}, on_challenge=sign)
    assert (c.welcome.authid, c.welcome.authmethod) == ("dave", "cryptosign")
    assert c.welcome.authextra["pubkey"] == pub
    stranger = SigningKey.generate()
    with pytest.raises(Aborted) as e:
        await connect(node.url, serializer, authmethods=["cryptosign"],
                      authextra={"pubkey": stranger.verify_key.encode().hex()},
                      on_challenge=lambda ch: stranger.sign(bytes.fromhex(ch.extra["challenge"])).hex())
    assert e.value.reason == "wamp.error.authentication_failed"
    with pytest.raises(Aborted):  # the right key id, a signature by another key
        await connect(node.url, serializer, authmethods=["cryptosign"], authextra={"pubkey": pub},
                      on_challenge=lambda ch: stranger.sign(bytes.fromhex(ch.extra["challenge"])).hex())


@ensure
async def test_cryptosign_with_autobahn_key_helper(make_node):
    from autobahn.wamp.cryptosign import CryptosignKey

    node = make_node(**auth_realm())
    key = CryptosignKey.from_bytes(bytes(range(32)))
    c = await connect(node.url, authmethods=["cryptosign"], authextra={"pubkey": key.public_key()},
                      on_challenge=lambda ch: key.sign_challenge(ch))
    assert c.welcome.authid == "dave"


@ensure
async def test_anonymous_disabled_gets_no_auth_method(make_node):
    node = make_node(**auth_realm())
    with pytest.raises(Aborted) as e:
        await connect(node.url)
    assert e.value.reason == "wamp.error.no_auth_method"


@ensure
async def test_repeated_failures_from_one_address_are_refused_for_a_while(make_node):
    node = make_node(**auth_realm(throttle={"max_failures": 3, "window": 60, "block_for": 60}))
    for _ in range(3):
        with pytest.raises(Aborted) as e:
            await connect(node.url, authmethods=["ticket"], authid="alice", on_challenge=answer_ticket("guess"))
        assert e.value.reason == "wamp.error.authentication_failed"
    with pytest.raises(Aborted) as e:  # even the right ticket is refused now
        await connect(node.url, authmethods=["ticket"], authid="alice", on_challenge=answer_ticket("alice-ticket"))
    assert e.value.reason == "wamp.error.not_authorized"
    assert "too many failed" in e.value.details.message


@ensure
async def test_authenticate_out_of_turn_is_a_protocol_violation(make_node):
    node = make_node(**auth_realm())
    peer = await raw_connect(node.url)
    peer.send([5, "sig", {}])  # AUTHENTICATE before HELLO
    assert (await peer.recv())[2] == "wamp.error.protocol_violation"
    peer = await raw_connect(node.url)
    peer.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"}])
    assert (await peer.recv())[0] == 4
    peer.send([5, "alice-ticket", {}])
    peer.send([5, "alice-ticket", {}])  # twice
    reply = await peer.recv()
    if reply[0] == 2:  # the first was verified before the second arrived
        reply = await peer.recv()
    assert reply[0] == 3 and reply[2] == "wamp.error.protocol_violation"
    await with_timeout(peer.closed)
    assert node.table.size() == 0


async def _ticket_login(url, headers=None, cookie_only=False):
    peer = await raw_connect(url, headers=headers)
    methods = ["cookie"] if cookie_only else ["cookie", "ticket"]
    peer.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": methods, "authid": "alice"}])
    msg = await peer.recv()
    if msg[0] == 4:
        peer.send([5, "alice-ticket", {}])
        msg = await peer.recv()
    return peer, msg


@ensure
async def test_cookie_authentication_across_connections_and_logout(make_node):
    node = make_node(**auth_realm(cookie={"max_age": 3600}))
    first, welcome = await _ticket_login(node.url)
    assert welcome[0] == 2 and welcome[2]["authmethod"] == "ticket"
    set_cookie = first.http_headers["set-cookie"]
    assert "cbtid=" in set_cookie and "HttpOnly" in set_cookie
    cookie = set_cookie.split(";", 1)[0]
    second, welcome2 = await _ticket_login(node.url, {"Cookie": cookie}, cookie_only=True)
    assert welcome2[0] == 2
    assert (welcome2[2]["authid"], welcome2[2]["authrole"], welcome2[2]["authmethod"]) == ("alice", "user", "cookie")
    # a stranger's made-up cookie gets nothing
    _, refused = await _ticket_login(node.url, {"Cookie": "cbtid=" + "x" * 32}, cookie_only=True)
    assert refused[0] == 3 and refused[2] == "wamp.error.no_auth_method"
    # logout ends the cookie
    second.send([6, {}, "wamp.close.logout"])
    assert (await second.recv())[2] == "wamp.close.goodbye_and_out"
    _, after = await _ticket_login(node.url, {"Cookie": cookie}, cookie_only=True)
    assert after[0] == 3


@ensure
async def test_cookie_expires(make_node):
    node = make_node(**auth_realm(cookie={"max_age": 1}))
    first, _ = await _ticket_login(node.url)
    cookie = first.http_headers["set-cookie"].split(";", 1)[0]
    from autobahn.twisted.util import sleep
    await sleep(1.1)
    _, after = await _ticket_login(node.url, {"Cookie": cookie}, cookie_only=True)
    assert after[0] == 3


# -- authorization -----------------------------------------------------------------------------------
def _authz_realm() -> dict:
    anonymous_guests = {"anonymous": {"authrole": "guest"}}
    return {"realms": [{"uri": "realm1", "auth": anonymous_guests, "roles": {"guest": {"permissions": [
        {"uri": "com.shop.", "match": "prefix", "allow": ["call", "subscribe"]},
        {"uri": "com.shop.admin.", "match": "prefix", "allow": []},  # a longer prefix wins
        {"uri": "com.shop.admin.ping", "allow": ["call"]},  # exact beats every prefix
        {"uri": "com..news", "match": "wildcard", "allow": ["publish", "subscribe"]},
        {"uri": "com.mine.", "match": "prefix", "allow": ["register", "publish"]},
    ]}}}]}


@ensure
async def test_authorization_allows_and_denies_each_action(make_node, serializer):
    node = make_node(**_authz_realm())
    c = await connect(node.url, serializer)
    await c.register(lambda: "mine", "com.mine.proc")  # register allowed (prefix)
    with pytest.raises(ApplicationError) as e:
        await c.register(lambda: None, "com.shop.proc")  # call/subscribe only
    assert e.value.error == "wamp.error.not_authorized"
    with pytest.raises(ApplicationError) as e:
        await c.call("com.mine.proc")  # register/publish only
    assert e.value.error == "wamp.error.not_authorized"
    with pytest.raises(ApplicationError) as e:
        await c.call("com.shop.admin.delete")  # the longer prefix allows nothing
    assert e.value.error == "wamp.error.not_authorized"
    with pytest.raises(ApplicationError) as e:  # exact rule: allowed, and then no one registered it
        await c.call("com.shop.admin.ping")
    assert e.value.error == "wamp.error.no_such_procedure"
    with pytest.raises(ApplicationError) as e:
        await c.call("com.shop.cart")  # allowed by prefix, nobody there
    assert e.value.error == "wamp.error.no_such_procedure"
    await c.subscribe(lambda: None, "com.sport.news")  # wildcard
    await c.publish("com.sport.news", options=PublishOptions(acknowledge=True))
    with pytest.raises(ApplicationError) as e:
        await c.publish("com.sport.news.today", options=PublishOptions(acknowledge=True))  # 4 parts ≠ 3
    assert e.value.error == "wamp.error.not_authorized"
    with pytest.raises(ApplicationError) as e:
        await c.subscribe(lambda: None, "org.other")
    assert e.value.error == "wamp.error.not_authorized"


@ensure
async def test_unknown_role_may_do_nothing(make_node):
    """The config refuses a role that is not defined; should one reach a session anyway, it may do nothing."""
    import dataclasses

    cfg = _authz_realm()
    cfg["realms"][0]["auth"]["anonymous"]["authrole"] = "nobody"
    with pytest.raises(ConfigError) as e:
        parse(cfg)
    assert e.value.path == "realms[0].auth.anonymous.authrole"
    node = make_node(**_authz_realm())
    realm = node.realms.get("realm1")
    realm.auth = dataclasses.replace(realm.auth, anonymous_authrole="nobody")
    c = await connect(node.url)
    with pytest.raises(ApplicationError) as e:
        await c.subscribe(lambda: None, "com.shop.x")
    assert e.value.error == "wamp.error.not_authorized"


def test_cli_auth_helpers():
    r = subprocess.run([sys.executable, "-m", "router.cli", "auth", "hash-secret", "s3cret"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    stored = r.stdout.split("ticket: ", 1)[1].strip()
    from realms.secrets import verify_secret

    assert verify_secret("s3cret", stored) and not verify_secret("other", stored)
    r = subprocess.run([sys.executable, "-m", "router.cli", "auth", "keygen"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    private = bytes.fromhex(lines[0].rsplit(" ", 1)[1])
    public = lines[1].rsplit(" ", 1)[1]
    assert SigningKey(private).verify_key.encode().hex() == public
    r = subprocess.run([sys.executable, "-m", "router.cli", "auth", "hash-secret", "--wampcra", "pw"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "salt:" in r.stdout and "key:" in r.stdout


ACTION_MESSAGES = {  # how each action is asked for on the wire, and the message type that answers yes
    "call": (lambda uri: [48, 9, {}, uri], 8),  # allowed: ERROR no_such_procedure (nobody registered)
    "register": (lambda uri: [64, 9, {}, uri], 65),
    "publish": (lambda uri: [16, 9, {"acknowledge": True}, uri], 17),
    "subscribe": (lambda uri: [32, 9, {}, uri], 33),
}
MATCH_RULES = {  # a rule per match kind, and a URI it covers
    "exact": ({"uri": "com.x.thing", "match": "exact"}, "com.x.thing"),
    "prefix": ({"uri": "com.x.", "match": "prefix"}, "com.x.any.thing"),
    "wildcard": ({"uri": "com..thing", "match": "wildcard"}, "com.y.thing"),
}


@pytest.mark.parametrize("match", sorted(MATCH_RULES))
@pytest.mark.parametrize("action", sorted(ACTION_MESSAGES))
@ensure
async def test_every_action_allowed_and_denied_under_every_match(make_node, action, match):
    rule, uri = MATCH_RULES[match]
    others = [a for a in ACTION_MESSAGES if a != action]
    node = make_node(realms=[{"uri": "realm1", "roles": {
        "allowed": {"permissions": [{**rule, "allow": [action]}]},
        "denied": {"permissions": [{**rule, "allow": others}]},
    }, "auth": {"anonymous": {"authrole": "allowed"}}}, {"uri": "realm2", "roles": {
        "denied": {"permissions": [{**rule, "allow": others}]},
    }, "auth": {"anonymous": {"authrole": "denied"}}}])
    make_msg, yes = ACTION_MESSAGES[action]
    peer = await raw_connect(node.url)
    await peer.hello("realm1")
    peer.send(make_msg(uri))
    reply = await peer.recv()
    assert reply[0] == yes and (yes != 8 or reply[4] == "wamp.error.no_such_procedure"), reply
    peer = await raw_connect(node.url)
    await peer.hello("realm2")
    peer.send(make_msg(uri))
    reply = await peer.recv()
    assert reply[0] == 8 and reply[4] == "wamp.error.not_authorized", reply


@ensure
async def test_a_new_hello_after_goodbye_of_an_authenticated_session_is_answered(make_node):
    """The spec lets a HELLO follow a GOODBYE on the same connection; after a ticket login too."""
    node = make_node(**auth_realm(cookie={"max_age": 3600}))
    peer, welcome = await _ticket_login(node.url)
    assert welcome[0] == 2
    peer.send([6, {}, "wamp.close.close_realm"])
    assert (await peer.recv())[2] == "wamp.close.goodbye_and_out"
    peer.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"}])
    assert (await peer.recv())[0] == 4  # CHALLENGE
    peer.send([5, "alice-ticket", {}])
    assert (await peer.recv())[0] == 2
