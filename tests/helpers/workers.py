"""`courtyard start --workers N` as a real process tree for tests: the supervisor and its workers on one
redis-server, sharing one port by SO_REUSEPORT (the kernel spreads the connections)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers.cluster import TIMINGS
from tests.routerproc import free_port, stop_process

CLUSTER = {"node_id": "n", **TIMINGS}


class Workers:
    """`courtyard start --workers N` as a process: its log (the supervisor's and the workers' lines)."""

    def __init__(self, tmp_path: Path, redis_url: str, count: int = 2, config: dict | None = None,
                 **cluster) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.count = count
        config = {"listeners": [{"port": self.port}], "admin": {"data_dir": None}, "shutdown": {"grace_period": 2},
                  "cluster": {"redis": redis_url, **CLUSTER, **cluster}, **(config or {})}
        self.config_path = tmp_path / "router.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / "router.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> Workers:
        """In a process group of its own, as a shell's foreground job is (a Ctrl-C reaches the group)."""
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "router.cli", "start", "-c", str(self.config_path),
                                      "--workers", str(self.count)], stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if wait:
            self.wait_for(f"all {self.count} workers serving")
        return self

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"no {text!r} ({count}) in {timeout}s:\n{self.log()}")

    def pids(self) -> dict[str, int]:
        """Each worker's latest PID, as the supervisor logged it."""
        return {w: int(pid) for w, pid in re.findall(r"worker (w\d+) started \(pid (\d+)\)", self.log())}

    def stop(self) -> None:
        pids = self.pids() if self.proc is not None else {}
        stop_process(self.proc, self._log)
        for pid in pids.values():  # a test that failed half way: no worker of ours left behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by whoever adopted it, is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False




class WorkersRouter:
    """A `--workers 2` router as the `spread` fixture offers it: its URL, and nothing of its internals
    (they live in other processes): a test that reads them is skipped for this variant."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self.url = workers.url

    async def wait_clean(self, timeout: float = 10.0) -> None:
        """Close the last test's sessions everywhere, then wait until no registration, no subscription
        and no other session is left (a close is not acknowledged to a client: it takes a moment)."""
        from autobahn.twisted.util import sleep

        from tests.wampclient import connect

        client = await connect(self.url)
        state: dict = {}

        async def read() -> None:
            state["regs"] = await client.call("wamp.registration.list")
            state["subs"] = await client.call("wamp.subscription.list")
            state["sessions"] = await client.call("wamp.session.count")

        try:
            await client.call("wamp.session.kill_all")  # the last test's clients (tests do not all leave)
            for _ in range(int(timeout / 0.05)):
                await read()
                if not any(state["regs"].values()) and not any(state["subs"].values()) and state["sessions"] == 1:
                    return
                await sleep(0.05)
            raise AssertionError(f"the workers router still holds the last test's state: {state}")
        finally:
            client.leave()

    def __getattr__(self, name: str):
        import pytest

        pytest.skip(f"reads the node's internals ({name}): runs in process only")
