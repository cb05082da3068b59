"""A real `redis-server` for cluster tests: its own process on a free loopback port, no persistence,
stopped by PID. Real Redis, not a fake: the cluster's claims (expiry, atomic SET NX, pipelines) are
Redis semantics, and only Redis shows them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.routerproc import free_port, stop_process


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install -y redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "redis.log", "w")
        self.proc = subprocess.Popen([exe, "--save", "", "--appendonly", "no", "--port", str(self.port),
                                      "--bind", "127.0.0.1", "--dir", str(self.workdir)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   f"{(self.workdir / 'redis.log').read_text()[-2000:]}")
            try:
                if self.command("PING") == "+PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING within {timeout}s")

    def command(self, *args: str) -> str:
        """One command in RESP over a plain socket, the first reply line back: for tests to look
        into Redis without the router's client."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(_resp(args))
            return _read_reply(s.makefile("rb"))

    def stop(self) -> None:
        stop_process(self.proc, self._log)
        self.proc = None


def _resp(args) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _read_reply(f):
    """A RESP2 reply: simple strings as '+OK', integers as int, bulk strings as str, arrays as lists."""
    line = f.readline().rstrip(b"\r\n").decode()
    kind, rest = line[0], line[1:]
    if kind in "+-":
        return line
    if kind == ":":
        return int(rest)
    if kind == "$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == "*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise ValueError(f"unexpected RESP reply {line!r}")
