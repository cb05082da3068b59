"""A Courtyard router as a separate process (`courtyard start`), for CLI and shutdown tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, log) -> None:
    """Kill a child process by its PID (if still running) and close the log it wrote to."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)
    if proc is not None:
        log.close()


class RouterProcess:
    def __init__(self, tmp_path: Path, config: dict | None = None, args: tuple[str, ...] = (),
                 log_file: Path | None = None, env: dict | None = None) -> None:
        """`args` go to `courtyard start`; with `log_file` the router logs there (--log-file), and
        `log()` reads it."""
        self.port = free_port()
        config = dict(config or {})
        config.setdefault("listeners", [{}])
        config["listeners"][0] = {**config["listeners"][0], "port": self.port}
        self.config_path = tmp_path / "router.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.args = [*args, *(("--log-file", str(log_file)) if log_file else ())]
        self.stdout_path = tmp_path / "router.stdout"
        self.log_path = log_file or self.stdout_path
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.proc: subprocess.Popen | None = None
        self.env = None if env is None else {**os.environ, **env}  # added to this process's environment

    def start(self, timeout: float = 15.0) -> RouterProcess:
        self._log = open(self.stdout_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "router.cli", "start", "-c", str(self.config_path),
                                      *self.args], stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists() and "started in" in self.log_path.read_text():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}:\n{self.stdout_path.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"router did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        stop_process(self.proc, self._log)
