"""One error type (issue 21): every error the router answers as a WAMP ERROR is a `wamp.WampError` with a
URI, a message, and the ERROR's Arguments and ArgumentsKw, and the in-router callee answers any of them
— with its args and kwargs — by what it is, not by looking for a `uri` attribute."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError

from realms.admin import AdminError
from router import wamp
from router.cluster.bus import RemoteError
from router.cluster.connection import ClusterUnavailable
from router.dealer import CallRefused
from router.meta import MetaError
from router.processes import ProcessError
from router.service import CallFailed, ServiceSession
from tests.helpers.poll import until
from tests.wampclient import connect

ensure = pytest_twisted.ensureDeferred


@pytest.mark.parametrize("cls", [MetaError, CallRefused, CallFailed, ProcessError, AdminError, RemoteError])
def test_every_layers_error_is_a_wamp_error(cls):
    e = cls("wamp.error.invalid_argument", "bad")
    assert isinstance(e, wamp.WampError)
    assert (e.uri, e.message, e.wamp_args, e.wamp_kwargs) == ("wamp.error.invalid_argument", "bad", ["bad"], {})
    unavailable = ClusterUnavailable()
    assert isinstance(unavailable, wamp.WampError) and unavailable.uri == "courtyard.error.cluster_unavailable"


def test_the_error_carries_its_own_arguments():
    e = wamp.WampError("com.example.nope", "no", ["no", 2], {"why": "because"})
    assert (e.wamp_args, e.wamp_kwargs, str(e)) == (["no", 2], {"why": "because"}, "no")
    assert str(CallFailed("com.example.nope", "no")) == "com.example.nope: no"


@ensure
async def test_an_in_router_procedure_answers_a_wamp_error_with_its_args_and_kwargs(node, no_unhandled_errors):
    def refuse(*args, **kwargs):
        raise wamp.WampError("com.example.refused", "not today", ["not today", 7], {"retry": "tomorrow"})

    class Odd(Exception):  # a `uri` attribute alone does not make an answerable error
        uri = "com.example.odd"

    def broken(*args, **kwargs):
        raise Odd("no")

    service = ServiceSession(node.realm_router("realm1"))
    service.register("com.example.refuse", refuse)
    service.register("com.example.broken", broken)
    dealer = node.realm_router("realm1").dealer
    await until(lambda: dealer.lookup("com.example.broken") is not None, 2, "the procedures registered")
    client = await connect(node.url)
    with pytest.raises(ApplicationError) as e:
        await client.call("com.example.refuse")
    assert (e.value.error, e.value.args, e.value.kwargs) == ("com.example.refused", ("not today", 7),
                                                             {"retry": "tomorrow"})
    with pytest.raises(ApplicationError) as e:
        await client.call("com.example.broken")
    assert e.value.error == "wamp.error.runtime_error"
    assert [f["log_failure"].type for f in no_unhandled_errors] == [Odd]  # logged as the bug it is
    no_unhandled_errors.clear()
    client.leave()
