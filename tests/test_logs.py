"""`courtyard start --log-format json --log-file PATH` (issue 15 item 4): a real router process writes
one JSON object a line, every line parses, and each carries its event's fields (session, realm,
authid, peer, reason…) beside the formatted message."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.exception import ApplicationError

from realms.secrets import hash_secret
from tests.routerproc import RouterProcess
from tests.wampclient import Aborted, answer_ticket, connect, raw_connect

ensure = pytest_twisted.ensureDeferred


async def _exited(router: RouterProcess) -> int:
    for _ in range(200):
        if router.proc.poll() is not None:
            return router.proc.returncode
        await sleep(0.05)
    raise AssertionError("the router did not exit")


@ensure
async def test_json_lines_to_a_file_carry_the_event_fields(tmp_path):
    log = tmp_path / "courtyard.jsonl"
    router = RouterProcess(tmp_path, {"admin": {"data_dir": None}, "shutdown": {"grace_period": 0.5}},
                           args=("--log-format", "json"), log_file=log).start()
    try:
        client = await connect(router.url)
        sid = client.welcome.session
        try:
            await connect(router.url, realm="no.such.realm")
        except Aborted:
            pass
        bad = await raw_connect(router.url)
        bad.send([1, "x y\u0007", {"roles": {"caller": {}}}])  # a realm no one can join, a control character
        await bad.recv()
        await client.leave()
        await sleep(0.2)
        router.signal(signal.SIGTERM)
        assert await _exited(router) == 0
    finally:
        router.stop()
    assert router.stdout_path.read_text() == ""  # everything went to the file
    records = [json.loads(line) for line in log.read_text().splitlines()]  # every line parses
    assert all({"time", "level", "namespace", "message"} <= set(r) for r in records)
    assert any("started in" in r["message"] for r in records)
    joined = next(r for r in records if "joined realm" in r["message"])
    assert (joined["sid"], joined["realm"], joined["level"]) == (sid, "realm1", "info")
    assert joined["peer"].startswith("127.0.0.1:") and isinstance(joined["authid"], str)
    left = next(r for r in records if "left realm" in r["message"])
    assert left["sid"] == sid and left["realm"] == "realm1"
    assert any(r["message"].startswith("stopped") for r in records)
    refused = next(r for r in records if r.get("reason") == "wamp.error.invalid_uri")
    assert refused["level"] == "warn" and refused["peer"].startswith("127.0.0.1:")
    assert "x y\\x07" in refused["event_message"]  # the event's own `message` field, escaped


def test_text_is_the_default_and_a_log_file_that_cannot_be_written_is_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "router.cli", "start", "--log-file", str(tmp_path / "no" / "dir.log")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"courtyard: cannot write the log file {tmp_path / 'no' / 'dir.log'}: "
                                             "No such file or directory"]
    r = subprocess.run([sys.executable, "-m", "router.cli", "start", "--log-format", "xml"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "invalid choice: 'xml'" in r.stderr


# A Python repr in a log line: an object's, None (or "(None)"), bytes, a list or mapping literal.
REPR = re.compile(r"object at 0x|<[A-Za-z_][\w.]*[ >]|\bNone\b|\bb'|\bb\"|\[\]|\{\}|\['|\{'|\[\"|\{\"")


@ensure
async def test_debug_logs_each_routed_message_once_and_no_line_holds_a_repr(tmp_path):
    """A scenario (join, register, call, an error, bad input, leave) at --log-level debug, as JSON."""
    log = tmp_path / "courtyard.jsonl"
    shop = {"uri": "shop", "auth": {"anonymous": False, "ticket": True},
            "users": {"bob": {"role": "r", "ticket": hash_secret("bob-pw", iterations=1000)}},
            "roles": {"r": {"permissions": [{"uri": "", "match": "prefix", "allow": ["call"]}]}}}
    router = RouterProcess(tmp_path, {"admin": {"data_dir": None}, "shutdown": {"grace_period": 0.5},
                                      "realms": [{"uri": "realm1"}, shop]},
                           args=("--log-format", "json", "--log-level", "debug"), log_file=log).start()
    try:
        callee, caller = await connect(router.url), await connect(router.url, "msgpack")
        with pytest.raises(Aborted):  # a failed authentication: one warning
            await connect(router.url, realm="shop", authmethods=["ticket"], authid="bob\nroot",
                          on_challenge=answer_ticket("wrong"))
        with pytest.raises(ConnectionError):  # no subprotocol this router speaks
            await raw_connect(router.url, protocols=["wamp.2.xml"])
        garbled = await raw_connect(router.url)
        garbled.send_raw(b"\xff\x00not json", binary=False)  # does not decode: ABORT
        await garbled.recv()

        def fail():
            raise ApplicationError("com.example.oops", "no\nluck")

        await callee.register(lambda a, b: a + b, "com.example.add")
        await callee.register(fail, "com.example.fail")
        await caller.subscribe(lambda: None, "com.example.news")
        assert await caller.call("com.example.add", 2, 3) == 5
        for procedure in ("com.example.fail", "com.example.none"):
            with pytest.raises(ApplicationError):
                await caller.call(procedure)
        bad = await raw_connect(router.url)
        bad.send([1, "realm1", {"roles": {"caller": {}}}])
        await bad.recv()  # WELCOME
        bad.send([48, 1, {}, "com.\u0007bell"])  # a URI with a control character: invalid_uri
        assert (await bad.recv())[0] == 8
        bad.send([48, "two", {}, "com.example.add"])  # malformed: ABORT protocol_violation
        assert (await bad.recv())[0] == 3
        await callee.leave()
        await caller.leave()
        await sleep(0.2)
        router.signal(signal.SIGTERM)
        assert await _exited(router) == 0
    finally:
        router.stop()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    messages = [r["message"] for r in records]
    callee_sid, caller_sid = callee.welcome.session, caller.welcome.session
    routed = {m for m in messages if " in realm1: " in m}
    for line in (f"session {callee_sid} in realm1: REGISTER com.example.add",
                 f"session {caller_sid} in realm1: SUBSCRIBE com.example.news",
                 f"session {caller_sid} in realm1: CALL com.example.add", f"session {callee_sid} in realm1: YIELD",
                 f"session {callee_sid} in realm1: ERROR com.example.oops"):
        assert line in routed, routed
    assert any(m.endswith(": CALL com.\\x07bell") for m in routed)  # escaped
    assert all(r["level"] == "debug" for r in records if r["message"] in routed)
    twice = {m for m in messages if messages.count(m) > 1}
    assert not twice, twice
    refused = [m for m in messages if "wamp.2.xml" in m]  # one event, one line (not Autobahn's two more)
    assert len(refused) == 1 and refused[0].startswith("refusing WebSocket from "), refused
    assert [m for m in messages if REPR.search(m) or not m.isprintable()] == []
