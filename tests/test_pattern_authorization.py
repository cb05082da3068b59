"""A prefix or wildcard SUBSCRIBE/REGISTER may not reach past the role's rules: it is allowed only when
the action is allowed on every URI the pattern can match."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions
from twisted.internet import defer

from realms.schema import parse_role
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred

RULES = [
    {"uri": "com.app.", "match": "prefix", "allow": ["subscribe", "publish", "register"]},
    {"uri": "com.app.secret", "match": "exact", "allow": []},
    {"uri": "com.app.private.", "match": "prefix", "allow": []},
    {"uri": "com.x", "match": "exact", "allow": ["subscribe", "register", "publish"]},
    {"uri": "org..update", "match": "wildcard", "allow": ["subscribe"]},
    {"uri": "org.acme.update", "match": "exact", "allow": []},
]


@pytest.mark.parametrize("pattern,match,allowed", [
    ("com.x", "prefix", False),            # would reach com.xyz and com.x.secret
    ("com.app.news.", "prefix", True),     # inside com.app., nothing more specific there
    ("com.app.", "prefix", False),         # com.app.secret and com.app.private. lie under it
    ("com.app.s", "prefix", False),        # com.app.secret starts with it
    ("com.app.p", "prefix", False),        # com.app.private. starts with it
    ("com.", "prefix", False),             # no rule covers all of com.
    ("", "prefix", False),
    ("com.app..x", "wildcard", False),     # could match com.app.private.x
    ("com.app.news..x", "wildcard", True),  # literal start com.app.news. is covered, nothing denies under it
    ("com.app..", "wildcard", False),      # could match com.app.private.x
    ("..x", "wildcard", False),            # no literal start: nothing covers it
    ("org..update", "wildcard", False),    # the same wildcard rule covers it, but org.acme.update denies
    ("org.news.update", "wildcard", True),
])
def test_the_rule_decision(pattern, match, allowed):
    role = parse_role("r", {"permissions": RULES}, "r")
    assert role.allows_pattern("subscribe", pattern, match) is allowed
    assert role.allows_pattern("subscribe", pattern, match) is allowed  # cached, same answer


def test_a_wildcard_rule_covers_the_same_and_narrower_wildcards():
    role = parse_role("r", {"permissions": [{"uri": "org..update", "match": "wildcard", "allow": ["subscribe"]}]}, "r")
    assert role.allows_pattern("subscribe", "org..update", "wildcard")
    assert role.allows_pattern("subscribe", "org.acme.update", "wildcard")
    assert not role.allows_pattern("subscribe", "org...", "wildcard")
    assert not role.allows_pattern("subscribe", "..update", "wildcard")
    assert not role.allows_pattern("register", "org..update", "wildcard")


def _realm() -> dict:
    return {"realms": [{"uri": "realm1", "auth": {"anonymous": True}, "roles": {"anonymous": {"permissions": RULES}}}]}


async def _denied(d) -> None:
    with pytest.raises(ApplicationError) as e:
        await with_timeout(d)
    assert e.value.error == "wamp.error.not_authorized"


@ensure
async def test_pattern_subscriptions_cannot_reach_past_the_rules(make_node, serializer):
    node = make_node(**_realm())
    c = await connect(node.url, serializer)
    await _denied(c.subscribe(lambda *a: None, "com.x", options=SubscribeOptions(match="prefix")))
    await _denied(c.subscribe(lambda *a: None, "com.app.", options=SubscribeOptions(match="prefix")))
    await _denied(c.subscribe(lambda *a: None, "..x", options=SubscribeOptions(match="wildcard")))
    assert node.realm_router("realm1").broker.size() == 0

    got: defer.DeferredQueue = defer.DeferredQueue()
    await c.subscribe(lambda *a, details: got.put(details.topic), "com.app.news.",
                      options=SubscribeOptions(match="prefix", details_arg="details"))
    await c.subscribe(lambda *a: None, "com.x")  # the exact subscription the rule names is fine
    pub = await connect(node.url, serializer)
    await pub.publish("com.app.news.today", options=PublishOptions(acknowledge=True))
    assert await with_timeout(got.get()) == "com.app.news.today"


@ensure
async def test_pattern_registrations_cannot_reach_past_the_rules(make_node, serializer):
    node = make_node(**_realm())
    c = await connect(node.url, serializer)
    await _denied(c.register(lambda: None, "com.x", options=RegisterOptions(match="prefix")))
    await _denied(c.register(lambda: None, "com.app..", options=RegisterOptions(match="wildcard")))
    await c.register(lambda: None, "com.app.jobs.", options=RegisterOptions(match="prefix"))
    assert node.realm_router("realm1").dealer.size() == 1
