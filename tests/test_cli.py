"""The daemon as users run it: `courtyard start` in its own process, the README's client example
against it, and graceful shutdown on SIGTERM / SIGINT (issue 2 points 1-2, issue 4 point 7)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from autobahn.twisted.util import sleep

from tests.routerproc import RouterProcess
from tests.wampclient import connect, raw_connect, with_timeout

ROOT = Path(__file__).resolve().parent.parent
ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def router(tmp_path):
    r = RouterProcess(tmp_path, {"shutdown": {"grace_period": 2.0}}).start()
    yield r
    r.stop()


def test_readme_client_example_really_works(router, tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Connect a client", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "ws://127.0.0.1:8080/ws" in code
    example = tmp_path / "example.py"
    example.write_text(code.replace("8080", str(router.port)))
    r = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "2 + 3 = 5" in out
    assert "joined realm realm1" in router.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@ensure
async def test_shutdown_says_goodbye_to_everyone_and_exits_zero(router, sig):
    clients = [await connect(router.url, s) for s in ("json", "msgpack")]
    silent = await raw_connect(router.url)  # never answers GOODBYE: the grace period ends it
    await silent.hello()
    t0 = time.monotonic()
    router.signal(sig)
    for c in clients:
        details = await with_timeout(c.left)
        assert details.reason == "wamp.close.system_shutdown"
    goodbye = await silent.recv()
    assert goodbye[0] == 6 and goodbye[2] == "wamp.close.system_shutdown"
    for _ in range(200):
        if router.proc.poll() is not None:
            break
        await sleep(0.05)
    assert router.proc.returncode == 0, router.log()
    assert time.monotonic() - t0 < 2.0 + 3.0  # the grace period plus start-up slack
    assert "saying GOODBYE to 3 sessions" in router.log()


def test_start_on_a_port_in_use_fails_loudly(router, tmp_path):
    (tmp_path / "second").mkdir()
    second = RouterProcess(tmp_path / "second", {})
    second.config_path.write_text(f"listeners:\n  - port: {router.port}\n")
    r = subprocess.run([sys.executable, "-m", "router.cli", "start", "-c", str(second.config_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "cannot start" in r.stdout + r.stderr
