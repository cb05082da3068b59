"""HELLO → WELCOME, ABORT on unknown realms, GOODBYE both ways, over real sockets (issue 2, point 4)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.wampclient import Aborted, connect, raw_connect, with_timeout

ensure = pytest_twisted.ensureDeferred


@ensure
async def test_welcome_details(node, serializer):
    client = await connect(node.url, serializer)
    w = client.welcome
    assert 1 <= w.session <= 2**53
    assert w.authrole == "anonymous" and w.authmethod == "anonymous" and w.authprovider == "static"
    assert w.authid and w.realm == "realm1"
    assert set(client._router_roles) == {"broker", "dealer"}  # autobahn keeps WELCOME.Details.roles here
    assert node.table.size() == 1
    client.leave()
    await with_timeout(client.left)


@ensure
async def test_welcome_on_the_wire_announces_roles_and_records_the_agent(node, serializer):
    peer = await raw_connect(node.url, serializer)
    peer.send([1, "realm1", {"roles": {"caller": {}}, "agent": "raw-test/1.0"}])
    welcome = await peer.recv()
    assert welcome[0] == 2 and type(welcome[1]) is int
    details = welcome[2]
    assert set(details["roles"]) == {"broker", "dealer"}
    assert details["authmethod"] == "anonymous" and details["realm"] == "realm1"
    session = node.table.fetch(welcome[1])
    assert session.agent == "raw-test/1.0" and session.roles == {"caller": {}}
    assert session.peer[0] == "127.0.0.1"


@ensure
async def test_session_ids_are_unique(node):
    clients = [await connect(node.url) for _ in range(20)]
    assert len({c.welcome.session for c in clients}) == 20
    assert node.table.size() == 20 == node.table.size("realm1")
    for c in clients:
        c.leave()


@ensure
async def test_unknown_realm_aborts(node, serializer):
    with pytest.raises(Aborted) as e:
        await connect(node.url, serializer, realm="no.such.realm")
    assert e.value.reason == "wamp.error.no_such_realm"
    assert node.table.size() == 0


@ensure
async def test_invalid_realm_uri_aborts(node):
    peer = await raw_connect(node.url)
    reply = await peer.hello("bad realm uri")
    assert reply[0] == 3 and reply[2] == "wamp.error.invalid_uri"


@ensure
async def test_no_roles_is_a_protocol_violation(node):
    peer = await raw_connect(node.url)
    peer.send([1, "realm1", {"roles": {}}])
    reply = await peer.recv()
    assert reply[0] == 3 and reply[2] == "wamp.error.protocol_violation"


@ensure
async def test_anonymous_not_offered_gets_no_auth_method(node):
    peer = await raw_connect(node.url)
    peer.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["ticket"]}])
    reply = await peer.recv()
    assert reply[0] == 3 and reply[2] == "wamp.error.no_auth_method"


@ensure
async def test_client_goodbye_gets_goodbye_and_out(node, serializer):
    peer = await raw_connect(node.url, serializer)
    welcome = await peer.hello()
    assert welcome[0] == 2
    peer.send([6, {}, "wamp.close.normal"])
    reply = await peer.recv()
    assert reply == [6, {}, "wamp.close.goodbye_and_out"]
    assert node.table.size() == 0
    # The spec lets the same transport open a new session after GOODBYE.
    again = await peer.hello()
    assert again[0] == 2 and again[1] != welcome[1]
    assert node.table.size() == 1


@ensure
async def test_router_goodbye_reaches_client(node, serializer):
    client = await connect(node.url, serializer)
    session = node.table.fetch(client.welcome.session)
    session.transport.close("wamp.close.close_realm", "maintenance")
    details = await with_timeout(client.left)
    assert details.reason == "wamp.close.close_realm"
    assert details.message == "maintenance"
    assert node.table.size() == 0
