"""A node killed with kill -9 in the middle of calls (issue 13, point 2): real `courtyard start`
processes on a real redis-server."""

from __future__ import annotations

import time

import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from tests.helpers.cluster import HEARTBEAT, NODE_TIMEOUT, node_process
from tests.helpers.poll import until
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred


def _known(redis_server, procedure: str, node: str) -> bool:
    entry = redis_server.command("HGET", "cy:reg:realm1", f'["exact", "{procedure}"]')
    return entry is not None and f"{node}|" in (entry.decode() if isinstance(entry, bytes) else entry)


@ensure
async def test_callee_node_killed_mid_call_its_callers_get_canceled(tmp_path, redis_server):
    a, b = (node_process(tmp_path, n, redis_server.url).start() for n in "ab")
    clients = []
    try:
        callee = await connect(b.url)
        caller = await connect(a.url)
        clients += [callee, caller]
        started = []

        def never(i):
            started.append(i)
            return defer.Deferred()  # never answers

        await callee.register(never, "com.example.never")
        await until(lambda: _known(redis_server, "com.example.never", "b"), 5, "the registration in Redis")
        calls = [caller.call("com.example.never", i) for i in range(3)]
        await until(lambda: len(started) == 3, 5, "3 invocations on b")
        outcomes: list = []
        for c in calls:
            c.addBoth(outcomes.append)
        b.proc.kill()
        b.proc.wait(10)
        t0 = time.monotonic()
        await until(lambda: len(outcomes) == 3, NODE_TIMEOUT + HEARTBEAT + 2.0, "the 3 callers' answers")
        took = time.monotonic() - t0
        assert all(o.value.error == "wamp.error.canceled" for o in outcomes), outcomes
        assert took < NODE_TIMEOUT + HEARTBEAT + 0.5, took
        # The dead node's callee is gone from the cluster: a new call is no_such_procedure.
        await until(lambda: redis_server.command("HLEN", "cy:reg:realm1") == 0, 5, "b's registration removed")
        try:
            await with_timeout(caller.call("com.example.never", 9))
            raise AssertionError("answered")
        except ApplicationError as e:
            assert e.error == "wamp.error.no_such_procedure"
        assert redis_server.command("EXISTS", "cy:n:b:reg") == 0
        assert "Traceback" not in a.log() and "Unhandled" not in a.log()
    finally:
        for cl in clients:
            if cl.is_connected():
                cl.leave()
        for node in (a, b):
            node.stop()


@ensure
async def test_caller_node_killed_mid_call_the_callee_is_interrupted(tmp_path, redis_server):
    a, b = (node_process(tmp_path, n, redis_server.url).start() for n in "ab")
    clients = []
    try:
        callee = await connect(a.url)
        caller = await connect(b.url)
        clients += [callee]
        started, interrupted = defer.Deferred(), defer.Deferred()

        def slow():
            started.callback(None)
            return defer.Deferred(lambda d: interrupted.callback("interrupted"))

        await callee.register(slow, "com.example.slow")
        await until(lambda: _known(redis_server, "com.example.slow", "a"), 5, "the registration in Redis")
        caller.call("com.example.slow").addErrback(lambda f: None)
        await with_timeout(started)
        b.proc.kill()
        b.proc.wait(10)
        t0 = time.monotonic()
        assert await with_timeout(interrupted, NODE_TIMEOUT + HEARTBEAT + 2.0) == "interrupted"
        assert time.monotonic() - t0 < NODE_TIMEOUT + HEARTBEAT + 0.5
        await sleep(0.1)
        assert callee.is_connected()
        assert "Traceback" not in a.log() and "Unhandled" not in a.log()
    finally:
        for cl in clients:
            if cl.is_connected():
                cl.leave()
        for node in (a, b):
            node.stop()
