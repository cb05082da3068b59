"""A real Prometheus (Debian's `prometheus`) for the alert rule and dashboard tests: its own process on a
free loopback port, a temp config and storage directory, scraping the given targets every second and
evaluating contrib/prometheus/alerts.yml; stopped by PID."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.routerproc import free_port, stop_process

ALERTS = Path(__file__).resolve().parent.parent / "contrib" / "prometheus" / "alerts.yml"
MISSING = ("prometheus and promtool are required for the alert rule and dashboard tests and were not found: "
           "install Debian's `prometheus` package (apt-get install -y prometheus; .ci/run does)")


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.targets = targets
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        exe = shutil.which("prometheus")
        assert exe, MISSING
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                  "rule_files": [str(ALERTS)],
                  "scrape_configs": [{"job_name": "courtyard", "static_configs": [{"targets": self.targets}]}]}
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self._log = open(self.workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen([exe, f"--config.file={path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}",
                                      "--storage.tsdb.retention.time=1h"],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_default_signals)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready in {timeout}s: {self.log()[-2000:]}")

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text()

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/<path> (blocking: call it from a thread in a reactor test)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # a bad query: Prometheus says why in the body
            return json.loads(e.read())

    def stop(self) -> None:
        stop_process(self.proc, self._log)
