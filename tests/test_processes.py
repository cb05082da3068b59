"""Session processes (issue 16) over real sockets with real clients: started on join and on demand,
state across calls, order, gone with the session however it ends, supervision, mailbox, timeout,
authorization, the admin realm."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError

from realms.secrets import hash_secret
from tests import procs
from tests.helpers.poll import until
from tests.wampclient import connect, raw_connect, rawsocket_connect, with_timeout

ensure = pytest_twisted.ensureDeferred
CALL, CAST = "courtyard.process.call", "courtyard.process.cast"
ADMIN = {"users": {"root": {"ticket": hash_secret("root-pw", iterations=1000)}}}


def realm(**process) -> dict:
    process.setdefault("class", "tests.procs:Counter")
    return {"uri": "realm1", "session_process": process}


def _admin(url: str):
    return connect(url, realm="courtyard.admin", authmethods=["ticket"], authid="root",
                   on_challenge=lambda c: "root-pw")


async def _refused(d, uri: str) -> ApplicationError:
    with pytest.raises(ApplicationError) as e:
        await with_timeout(d)
    assert e.value.error == uri, e.value
    return e.value


@ensure
async def test_started_on_join_keeps_state_and_is_its_sessions_own(make_node):
    node = make_node(realms=[realm()])
    a = await connect(node.url)
    b = await connect(node.url)
    assert node.processes.started(a.welcome.session) and node.processes.started(b.welcome.session)
    assert await a.call(CALL, {"op": "add"}) == 1
    assert await a.call(CALL, {"op": "add", "by": 5}) == 6
    assert await b.call(CALL, {"op": "add"}) == 1  # b's own process, not a's
    got = await a.call(CALL, {"op": "get"})
    assert got == {"n": 6, "authid": a.welcome.authid, "session": a.welcome.session}
    assert await a.call(CALL, op="coro") == 60  # keyword arguments are the request; a coroutine answers
    a.leave()
    b.leave()
    await with_timeout(a.left)
    await with_timeout(b.left)


@ensure
async def test_started_on_demand_at_the_first_call(make_node):
    node = make_node(realms=[realm(start="on_demand")])
    a = await connect(node.url)
    assert not node.processes.started(a.welcome.session)
    assert await a.call(CALL, {"op": "add"}) == 1
    assert node.processes.started(a.welcome.session)
    a.leave()
    await with_timeout(a.left)


@ensure
async def test_no_process_configured_is_a_clear_error(node):
    a = await connect(node.url)
    await _refused(a.call(CALL, {"op": "get"}), "courtyard.error.no_such_process")
    a.leave()
    await with_timeout(a.left)


@ensure
async def test_calls_and_casts_are_handled_in_arrival_order(make_node):
    node = make_node(realms=[realm()])
    a = await connect(node.url)
    sent = []
    pending = []
    for i in range(40):
        tag = f"m{i}"
        sent.append(tag)
        if i % 3 == 0:
            pending.append(a.call(CALL, {"op": "sleep", "seconds": 0.001, "tag": tag}))
        else:
            pending.append(a.call(CAST, {"op": "add", "tag": tag}))  # RESULT at once, handled in turn
    for d in pending:
        await d
    assert await a.call(CALL, {"op": "order", "tag": "last"}) == [*sent, "last"]
    a.leave()
    await with_timeout(a.left)


@ensure
async def test_state_goes_with_the_session_and_a_new_one_starts_fresh(make_node):
    node = make_node(realms=[realm()])
    watcher = await connect(node.url)
    ended = []
    await watcher.subscribe(lambda sid, reason: ended.append((sid, reason)), "test.proc.ended")
    a = await connect(node.url)
    assert await a.call(CALL, {"op": "add", "by": 7}) == 7
    a.leave()
    await with_timeout(a.left)
    await until(lambda: ended)
    assert ended == [(a.welcome.session, "client said goodbye ('wamp.close.normal')")]
    assert not node.processes.started(a.welcome.session)
    a2 = await connect(node.url)
    assert await a2.call(CALL, {"op": "add"}) == 1
    assert node.processes.count() == 2  # the watcher's and a2's
    for c in (a2, watcher):
        c.leave()
        await with_timeout(c.left)
    assert node.processes.count() == 0


@ensure
async def test_terminate_runs_however_the_session_ends(make_node):
    node = make_node(realms=[{**realm(), "limits": {}}, {"uri": "short", "limits": {"expires_in": 0.3},
                                                        "session_process": {"class": "tests.procs:Counter"}}],
                     node={"sweep_interval": 0.1})
    procs.ENDED.clear()
    killed = await connect(node.url)
    node.table.kill(killed.welcome.session, "wamp.close.killed", "go")
    await with_timeout(killed.left)
    dropped = await raw_connect(node.url)
    welcome = await dropped.hello()
    dropped.drop()
    expiring = await connect(node.url, realm="short")
    await with_timeout(expiring.left, 5)
    await until(lambda: len(procs.ENDED) == 3)
    reasons = dict(procs.ENDED)
    assert reasons[killed.welcome.session] == "router said goodbye (wamp.close.killed)"
    assert reasons[welcome[1]] == "connection lost"
    assert reasons[expiring.welcome.session] == "router said goodbye (courtyard.close.session_expired)"
    assert node.processes.count() == 0
    last = await connect(node.url)
    await node.stop()
    assert procs.ENDED[-1] == (last.welcome.session, "router said goodbye (wamp.close.system_shutdown)")
    assert node.processes.count() == 0


@ensure
async def test_a_crash_fails_the_call_logs_once_and_restarts_fresh(make_node, log_lines):
    node = make_node(realms=[realm()])
    a = await connect(node.url)
    assert await a.call(CALL, {"op": "add", "by": 4}) == 4
    e = await _refused(a.call(CALL, {"op": "crash"}), "courtyard.error.process_failed")
    assert "ValueError: boom: the handler broke" in e.args[0]
    assert await a.call(CALL, {"op": "add"}) == 1  # a fresh init: the state is gone
    await _refused(a.call(CALL, {"op": "crash_later"}), "courtyard.error.process_failed")  # a failing Deferred
    assert await a.call(CALL, {"op": "add"}) == 1
    failed = [line for line in log_lines if "failed in handle_call" in line]
    assert len(failed) == 2 and "Traceback" in failed[0] and "boom: the handler broke" in failed[0]
    assert node.processes.list()[0]["restarts"] == 2
    a.leave()
    await with_timeout(a.left)


@ensure
async def test_restart_storm_stops_the_process(make_node):
    node = make_node(realms=[realm(restart={"max": 1, "within": 60})])
    a = await connect(node.url)
    await _refused(a.call(CALL, {"op": "crash"}), "courtyard.error.process_failed")  # restarted
    await _refused(a.call(CALL, {"op": "crash"}), "courtyard.error.process_failed")  # stopped
    assert not node.processes.started(a.welcome.session)
    e = await _refused(a.call(CALL, {"op": "add"}), "courtyard.error.process_failed")
    assert "stopped after too many restarts" in e.args[0]
    assert a.is_attached()  # then: stop leaves the session be
    a.leave()
    await with_timeout(a.left)


@ensure
async def test_restart_storm_with_kill_session_says_goodbye(make_node):
    node = make_node(realms=[realm(restart={"max": 0, "within": 60, "then": "kill_session"})])
    a = await connect(node.url)
    await _refused(a.call(CALL, {"op": "crash"}), "courtyard.error.process_failed")
    details = await with_timeout(a.left)
    assert details.reason == "courtyard.close.process_failed"
    assert "failed 1 times within 60s" in details.message
    assert node.processes.count() == 0


@ensure
async def test_a_full_mailbox_is_process_busy(make_node):
    node = make_node(realms=[realm(mailbox=2)])
    a = await connect(node.url)
    slow = a.call(CALL, {"op": "sleep", "seconds": 0.3})  # being handled: not in the mailbox
    await sleep(0.05)
    queued = [a.call(CAST, {"op": "add"}), a.call(CAST, {"op": "add"})]
    for d in queued:
        await d
    e = await _refused(a.call(CAST, {"op": "add"}), "courtyard.error.process_busy")
    assert "mailbox" in e.args[0]
    await _refused(a.call(CALL, {"op": "get"}), "courtyard.error.process_busy")
    assert await slow == 0
    assert (await a.call(CALL, {"op": "get"}))["n"] == 2  # the two queued casts, not the refused one
    assert node.processes.count() == 1
    a.leave()
    await with_timeout(a.left)


@ensure
async def test_a_slow_call_times_out_and_the_process_keeps_its_place(make_node):
    node = make_node(realms=[realm(call_timeout=0.2)])
    a = await connect(node.url)
    assert await a.call(CALL, {"op": "add"}) == 1
    e = await _refused(a.call(CALL, {"op": "sleep", "seconds": 0.5}), "wamp.error.timeout")
    assert "0.2s" in e.args[0]
    await sleep(0.4)  # the slow request still runs to its end: it kept its place, like a GenServer's
    assert await a.call(CALL, {"op": "add"}) == 2  # the same process, state intact, after the slow one
    assert node.processes.list()[0]["restarts"] == 0
    a.leave()
    await with_timeout(a.left)


@ensure
async def test_a_role_without_permission_is_refused(make_node):
    spec = {**realm(), "roles": {"anonymous": {"permissions": [{"uri": "com.example.", "match": "prefix",
                                                                 "allow": ["call"]}]}}}
    node = make_node(realms=[spec])
    a = await connect(node.url)
    await _refused(a.call(CALL, {"op": "get"}), "wamp.error.not_authorized")
    await _refused(a.call(CAST, {"op": "add"}), "wamp.error.not_authorized")
    assert node.processes.started(a.welcome.session)  # started on join; only unreachable
    a.leave()
    await with_timeout(a.left)


@ensure
async def test_no_client_can_register_the_process_procedures(make_node):
    node = make_node(realms=[realm()])
    a = await connect(node.url)
    b = await connect(node.url)
    for procedure in (CALL, CAST):
        await _refused(b.register(lambda *a, **k: "hijacked", procedure), "wamp.error.invalid_uri")
    await b.register(lambda *a, **k: "hijacked", "courtyard.process.", options=_prefix())
    assert await a.call(CALL, {"op": "add"}) == 1  # still a's own process
    for c in (a, b):
        c.leave()
        await with_timeout(c.left)


def _prefix():
    from autobahn.wamp.types import RegisterOptions

    return RegisterOptions(match="prefix")


@ensure
async def test_a_process_publishes_and_calls_through_the_router(make_node):
    node = make_node(realms=[realm()])
    a = await connect(node.url)
    backend = await connect(node.url)
    got = []
    await backend.subscribe(lambda n, who: got.append((n, who)), "com.example.counted")
    await backend.register(lambda x: x * 2, "com.example.double")
    await a.call(CALL, {"op": "add", "by": 3})
    await a.call(CALL, {"op": "publish", "topic": "com.example.counted"})
    await until(lambda: got)
    assert got == [(3, a.welcome.authid)]
    assert await a.call(CALL, {"op": "call", "procedure": "com.example.double", "args": [21]}) == 42
    e = await _refused(a.call(CALL, {"op": "call", "procedure": "com.example.nothing"}),
                       "courtyard.error.process_failed")  # not handled by the class: it crashed
    assert "wamp.error.no_such_procedure" in e.args[0]
    for c in (a, backend):
        c.leave()
        await with_timeout(c.left)


@ensure
async def test_admin_lists_starts_calls_casts_and_terminates(make_node):
    node = make_node(admin=dict(ADMIN), realms=[realm(start="on_demand")])
    admin = await _admin(node.url)
    a = await connect(node.url)
    sid = a.welcome.session
    assert await admin.call("courtyard.process.started", sid) is False
    assert await admin.call("courtyard.process.start", sid, arg=10) is True
    assert await admin.call("courtyard.process.start", sid) is False  # at most one per session
    assert await admin.call("courtyard.process.call", sid, {"op": "add"}) == 11
    await admin.call("courtyard.process.cast", sid, {"op": "add", "by": 5})
    assert await a.call(CALL, {"op": "add"}) == 17
    listed = await admin.call("courtyard.process.list", realm="realm1")
    assert [(p["session"], p["class"], p["realm"]) for p in listed] == [(sid, "tests.procs:Counter", "realm1")]
    in_flight = admin.call("courtyard.process.call", sid, {"op": "sleep", "seconds": 2})
    await sleep(0.05)
    t0 = time.monotonic()
    assert await admin.call("courtyard.process.terminate", sid) is True
    e = await _refused(in_flight, "courtyard.error.no_such_process")  # at once, not when the handler answers
    assert time.monotonic() - t0 < 1.5
    assert "terminated by an admin" in e.args[0]
    assert await admin.call("courtyard.process.list") == []
    await _refused(admin.call("courtyard.process.call", sid, {"op": "get"}), "courtyard.error.no_such_process")
    await _refused(admin.call("courtyard.process.call", 12345, {"op": "get"}), "wamp.error.no_such_session")
    await _refused(admin.call("courtyard.process.call", "x"), "wamp.error.invalid_argument")
    for c in (a, admin):
        c.leave()
        await with_timeout(c.left)


def test_a_bad_class_path_fails_the_config_check():
    from realms.schema import ConfigError
    from router.config import parse

    for cls, why in (("no.such.module:X", "cannot import 'no.such.module'"),
                     ("tests.procs:Nope", "has no class 'Nope'"),
                     ("tests.procs.Counter", "must be 'package.module:Class'")):
        with pytest.raises(ConfigError) as e:
            parse({"realms": [realm(**{"class": cls})]})
        assert str(e.value).startswith("realms[0].session_process.class: "), str(e.value)
        assert why in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse({"realms": [realm(start="later", restart={"then": "explode"})]})
    assert "realms[0].session_process.start" in str(e.value)
    assert "realms[0].session_process.restart.then" in str(e.value)


@ensure
async def test_the_example_cart_and_the_cli(tmp_path):
    """config/examples/session_process.yaml as shipped (plus an admin), in a real `courtyard start`:
    the docs/session-processes.md client example, a client with its cart, and `courtyard admin processes ...` on it."""
    import json
    import re
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    from twisted.internet import threads

    from tests.helpers.admin import ADMIN as CLI_ADMIN
    from tests.helpers.admin import cli
    from tests.routerproc import RouterProcess

    config = yaml.safe_load((Path(__file__).parent.parent / "config/examples/session_process.yaml").read_text())
    router = RouterProcess(tmp_path, {**config, "admin": CLI_ADMIN}).start()
    try:
        async def say(*argv: str) -> str:
            r = await threads.deferToThread(cli, *argv, url=router.url)
            assert r.returncode == 0 and r.stderr == "", r.stderr
            return r.stdout.strip()

        readme = (Path(__file__).parent.parent / "docs/session-processes.md").read_text()
        code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
        example = tmp_path / "example.py"
        example.write_text(code.replace("8080", str(router.port)))
        r = await threads.deferToThread(subprocess.run, [sys.executable, str(example)], capture_output=True,
                                        text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "{'items': {'apple': 2}, 'count': 2}" in r.stdout + r.stderr
        assert "{'items': {'apple': 2, 'pear': 1}, 'count': 3}" in r.stdout + r.stderr

        shopper = await connect(router.url, realm="shop")
        backend = await connect(router.url, realm="shop")  # anonymous too: it may not subscribe to orders
        await _refused(backend.subscribe(lambda o: None, "com.example.orders"), "wamp.error.not_authorized")
        sid = str(shopper.welcome.session)
        assert await shopper.call(CALL, {"op": "add", "item": "apple", "qty": 2}) == \
            {"items": {"apple": 2}, "count": 2}
        await shopper.call(CAST, {"op": "add", "item": "pear"})
        assert await say("processes", "started", sid) == f"session {sid} has a process"
        assert json.loads(await say("processes", "call", sid, '{"op": "list"}', "--json")) == \
            {"items": {"apple": 2, "pear": 1}, "count": 3}
        assert await say("processes", "cast", sid, '{"op": "remove", "item": "apple"}') == \
            f"sent to the process of session {sid}"
        assert (await shopper.call(CALL, {"op": "list"}))["items"] == {"apple": 1, "pear": 1}
        listed = await say("processes", "list", "--realm", "shop")
        assert sid in listed and "router.examples.cart:Cart" in listed
        assert await say("processes", "terminate", sid) == f"process of session {sid} terminated"
        assert await say("processes", "start", sid) == f"process of session {sid} started"
        assert await shopper.call(CALL, {"op": "list"}) == {"items": {}, "count": 0}  # a fresh cart
        r = await threads.deferToThread(cli, "processes", "call", "42", '"x"', url=router.url)
        assert r.returncode == 1 and "wamp.error.no_such_session" in r.stderr
        for c in (shopper, backend):
            c.leave()
            await with_timeout(c.left)
        assert "Traceback" not in router.log()
    finally:
        router.stop()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def _session_lifetime(url: str, i: int) -> None:
    """One raw RawSocket session (the cheapest real peer): HELLO, (every 10th) a call to its process, then
    GOODBYE or a dropped connection."""
    peer = await rawsocket_connect(url)
    welcome = await peer.hello()
    assert welcome[0] == 2, welcome
    if i % 10 == 0:
        peer.send([48, 1, {}, CALL, [i]])
        assert await peer.recv() == [50, 1, {}, [1]]
    if i % 2:
        peer.send([6, {}, "wamp.close.normal"])
        assert (await peer.recv())[0] == 6
        peer.transport.loseConnection()
    else:
        peer.drop()
    await with_timeout(peer.closed)


@ensure
async def test_ten_thousand_sessions_leave_no_process_behind(make_node):
    import gc

    from twisted.internet import defer

    from router.processes import Process

    node = make_node(realms=[realm(**{"class": "tests.procs:Idle"})], listeners=[{"type": "rawsocket"}])
    url = f"rs://127.0.0.1:{node.port}"

    async def churn(first: int, count: int, batch: int = 50) -> None:
        """In batches no larger than Twisted's listen backlog (50): a connection refused by a full
        backlog is retried by the kernel after a second or more, and a loaded machine can make that 5 s."""
        for start in range(first, first + count, batch):
            await defer.gatherResults([defer.ensureDeferred(_session_lifetime(url, i))
                                       for i in range(start, start + batch)], consumeErrors=True)
            await until(lambda: node.table.size() == 0 and node.processes.count() == 0)

    await churn(0, 1000)  # warm up: buffers, caches and the allocator's arenas settle
    gc.collect()
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, Process)}  # an earlier test's, still referenced
    before = _rss_kib()
    await churn(1000, 10_000)
    gc.collect()
    after = _rss_kib()
    assert node.processes.count() == 0 and not node.processes._stopped
    assert not [o for o in gc.get_objects() if isinstance(o, Process) and id(o) not in earlier]
    assert after - before < 8 * 1024, (before, after)  # KiB: 10,000 processes kept would be several times that


@ensure
async def test_broken_classes_are_logged_and_nothing_else_breaks(make_node, log_lines):
    node = make_node(realms=[realm(**{"class": "tests.procs:Faulty"}, restart={"max": 1, "within": 60}),
                             {"uri": "unbuildable", "session_process": {"class": "tests.procs:Unbuildable",
                                                                        "start": "on_demand"}}])
    a = await connect(node.url)
    assert await a.call(CALL, "ping") == "ping"
    a.leave()  # terminate raises: one error line, the session still ends cleanly
    await with_timeout(a.left)
    await until(lambda: any("failed in terminate: RuntimeError: terminate broke" in line for line in log_lines))
    b = await connect(node.url)
    assert node.processes.start(b.welcome.session) is False  # started on join
    node.processes.terminate(b.welcome.session)
    node.processes.start(b.welcome.session, arg="fail")  # init fails: restarted (without arg: same arg), stopped
    assert not node.processes.started(b.welcome.session)
    await _refused(b.call(CALL, "ping"), "courtyard.error.process_failed")
    c = await connect(node.url, realm="unbuildable")
    e = await _refused(c.call(CALL, "ping"), "courtyard.error.process_failed")
    assert "cannot be created: RuntimeError: no instance for you" in e.args[0]
    assert any("cannot be created" in line for line in log_lines)
    for client in (b, c):
        client.leave()
        await with_timeout(client.left)
    assert node.processes.count() == 0


@ensure
async def test_an_admin_gives_a_realm_processes_at_run_time(make_node):
    node = make_node(admin=dict(ADMIN))
    admin = await _admin(node.url)
    e = await _refused(admin.call("courtyard.realm.update", "realm1",
                                  {"session_process": {"class": "no.such:Thing"}}), "wamp.error.invalid_argument")
    assert "changes.session_process.class: cannot import 'no.such'" in e.args[0]
    before = await connect(node.url)
    await admin.call("courtyard.realm.update", "realm1", {"session_process": {"class": "tests.procs:Counter"}})
    after = await connect(node.url)
    assert await after.call(CALL, {"op": "add"}) == 1
    assert not node.processes.started(before.welcome.session)  # joined before: on_join has passed
    for c in (before, after, admin):
        c.leave()
        await with_timeout(c.left)


@ensure
async def test_in_a_cluster_admin_requests_reach_the_process_on_its_sessions_node(tmp_path, redis_server):
    """Two `courtyard start` nodes on a real redis-server: the admin on node b lists, calls, casts and
    terminates the process of a session on node a; the process lives on node a."""
    from tests.helpers.cluster import node_process

    nodes = [node_process(tmp_path, name, redis_server.url, {"realms": [realm()]}).start() for name in "ab"]
    a, b = nodes
    try:
        on_a = await connect(a.url)
        on_b = await connect(b.url)
        admin = await connect(b.url, realm="courtyard.admin", authmethods=["ticket"], authid="admin",
                              on_challenge=lambda c: "s3cret")
        sid = on_a.welcome.session
        await until(lambda: redis_server.command("SCARD", "cy:r:realm1") == 2, 5, "2 sessions in Redis")
        assert await on_a.call(CALL, {"op": "add", "by": 2}) == 2
        assert await admin.call("courtyard.process.started", sid) is True
        assert await admin.call("courtyard.process.call", sid, {"op": "add"}) == 3  # node a's process
        await admin.call("courtyard.process.cast", sid, {"op": "add", "by": 10})
        assert await on_a.call(CALL, {"op": "add"}) == 14
        listed = await admin.call("courtyard.process.list", realm="realm1")
        assert sorted((p["node"], p["session"]) for p in listed) == sorted([("a", sid), ("b", on_b.welcome.session)])
        await _refused(admin.call("courtyard.process.call", sid, {"op": "crash"}), "courtyard.error.process_failed")
        assert await admin.call("courtyard.process.terminate", sid) is True
        assert await admin.call("courtyard.process.started", sid) is False
        await _refused(on_a.call(CALL, {"op": "get"}), "courtyard.error.no_such_process")
        await _refused(admin.call("courtyard.process.call", 12345, "x"), "wamp.error.no_such_session")
        for c in (on_a, on_b, admin):
            c.leave()
            await with_timeout(c.left)
        assert a.log().count("Traceback") == 1 and "failed in handle_call: ValueError: boom" in a.log()  # the crash
        assert "Traceback" not in b.log() and "Unhandled" not in a.log() + b.log(), b.log()
    finally:
        for n in nodes:
            n.stop()
