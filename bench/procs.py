"""Processes the harness starts (router, ceiling server, load generators) and what it reads about
them from /proc. Only processes started here are ever signalled, and only by their own PID."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[bytes]:
    """/proc/PID/stat's fields after the command name (the first is the state)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rindex(b")") + 2:].split()


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (a `--workers` router's workers), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):  # gone meanwhile
                pass
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live children (a supervisor's workers; the harness's other
    processes have none), from /proc/PID/stat (fields 14 and 15)."""
    total = 0.0
    for p in (pid, *children(pid)):
        try:
            fields = _stat(p)
        except OSError:
            continue  # a child gone meanwhile
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of a process and its live children, from /proc/PID/statm."""
    total = 0
    for p in (pid, *children(pid)):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_listening(port: int, proc: subprocess.Popen | None, timeout: float) -> float:
    """Poll until a TCP connect to the port succeeds; returns the seconds it took."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - t0
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


class Server:
    """A router or ceiling server subprocess on a free loopback port, with a raised fd limit."""

    def __init__(self, argv: list[str], port: int, log_path: Path, graceful: bool = False) -> None:
        self.port = port
        self.graceful = graceful  # stop with SIGTERM first (a cluster node then leaves Redis clean)
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.t_spawn = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_raise_nofile)
        self.pid = self.proc.pid
        self.startup = 0.0
        self.ready: Callable[[], bool] | None = None  # after listening, until this says so (workers)

    def wait(self, timeout: float = 20.0) -> Server:
        try:
            wait_listening(self.port, self.proc, timeout)
            deadline = time.monotonic() + timeout
            while self.ready is not None and not self.ready():  # every worker of a --workers router
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the router's workers did not all start")
                time.sleep(0.02)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.log_tail()}") from None
        self.startup = time.monotonic() - self.t_spawn
        return self

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.graceful and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


EVERYTHING = [{"uri": "", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]
# The role's rules under --router-profile authz: the bench's URIs are allowed by the most specific of
# several rules, so every request is checked (and the per-(action, URI) cache does its job).
AUTHZ_RULES = [
    {"uri": "bench.echo", "match": "exact", "allow": ["call", "register"]},
    {"uri": "bench.", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]},
    {"uri": "bench..private", "match": "wildcard", "allow": []},
    {"uri": "com.", "match": "prefix", "allow": ["call"]},
    {"uri": "wamp.", "match": "prefix", "allow": []},
]
# Under --router-profile limits: rate and quota windows so large they never refuse, so only their cost shows.
NEVER_REACHED = {"rate": {"limit": 1_000_000_000, "duration": 1}, "quota": {"limit": 1_000_000_000, "duration": 3600}}
PROFILES = ("open", "authz", "limits")


def start_router(workdir: Path, realm: str = "realm1", name: str = "router", profile: str = "open",
                 cluster: str | None = None, workers: int = 1, session_process: dict | None = None,
                 shards: list[str] | None = None) -> Server:
    """`courtyard start` on a free port with log level warn; anonymous access to `realm`. `profile`:
    open (a role allowed everything: no per-message checks), authz (permission rules checked on every
    request), limits (rate and quota windows checked on every request). `cluster`: a Redis URL, to
    run the router as a cluster node (node id `name`); `workers`: `--workers N` on that cluster (ready
    once every worker has announced itself in Redis). `session_process`: the realm's, if any. `shards`:
    the cluster's other Redis shards (cluster.redis becomes the list, `cluster` first)."""
    port = free_port()
    realm_config: dict = {"uri": realm, "auth": {"anonymous": {"enabled": True, "authrole": "anonymous"}},
                          "roles": {"anonymous": {"permissions": AUTHZ_RULES if profile == "authz" else EVERYTHING}}}
    if profile == "limits":
        realm_config["limits"] = NEVER_REACHED
    if session_process is not None:
        realm_config["session_process"] = session_process
    config = {
        "listeners": [{"type": "websocket", "host": "127.0.0.1", "port": port, "path": "/ws",
                       "serializers": ["json", "msgpack"]}],
        "limits": {"max_sessions": 100_000, "max_pending_calls": 100_000},
        "realms": [realm_config],
    }
    if cluster is not None:
        config["cluster"] = {"redis": [cluster, *shards] if shards else cluster, "node_id": name}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    server = Server([sys.executable, "-m", "router.cli", "start", "-c", str(path), "--log-level", "warn",
                     "--workers", str(workers)], port, workdir / f"{name}.log", graceful=cluster is not None)
    if workers > 1:
        keys = [f"cy:node:{name}-w{i}" for i in range(workers)]
        server.ready = lambda: redis_command(cluster, "EXISTS", *keys) == workers
    return server


def start_redis(workdir: Path, name: str = "redis") -> Server:
    """A redis-server of the bench's own (`--cluster`): loopback, free port, no persistence."""
    import shutil

    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("--cluster needs redis-server (Debian: apt-get install -y redis-server)")
    port = free_port()
    return Server([exe, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", "127.0.0.1",
                   "--dir", str(workdir)], port, workdir / f"{name}.log")


def redis_pid(url: str) -> int | None:
    """The redis-server's PID (INFO server), to count its CPU."""
    try:
        info = redis_command(url, "INFO", "server")
    except OSError:
        return None
    for line in (info.decode() if isinstance(info, bytes) else str(info)).splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    return None


def redis_command(url: str, *args: str) -> bytes | int:
    """One Redis command over a plain socket: a bulk reply as bytes, an integer reply as int."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    request = f"*{len(args)}\r\n".encode() + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        f = s.makefile("rb")
        line = f.readline()
        if line[:1] == b":":
            return int(line[1:])
        if line[:1] != b"$":
            raise RuntimeError(f"Redis answered {line!r}")
        return f.read(int(line[1:]))


def redis_info(url: str, field: str) -> int:
    """One integer field of Redis INFO (e.g. used_memory)."""
    text = redis_command(url, "INFO").decode()
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":", 1)[1])
    raise KeyError(field)


def start_ceiling(workdir: Path) -> Server:
    port = free_port()
    return Server([sys.executable, "-m", "bench.ceiling", "--port", str(port)], port, workdir / "ceiling.log")


class LoadProc:
    """One load generator process (bench/load.py), spoken to by JSON lines over its stdio."""

    def __init__(self, role: str, args: dict, workdir: Path) -> None:
        self.role = role
        self._err = tempfile.NamedTemporaryFile("w+", dir=workdir, prefix=f"{role}-", suffix=".err", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.load", role, json.dumps(args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     preexec_fn=_raise_nofile)
        self.pid = self.proc.pid
        self._buf = b""

    def read(self, deadline: float) -> dict:
        """The next JSON line from the process, or RuntimeError when it fails or is too late."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.role} process {self.pid}: no answer in time{self._stderr()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.role} process {self.pid} exited{self._stderr()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.role} process {self.pid}: {msg['error']}{self._stderr()}")
        return msg

    def tell(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def _stderr(self) -> str:
        self._err.flush()
        self._err.seek(0)
        text = self._err.read().strip()
        return f"\n{text[-2000:]}" if text else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc.stdout.close()
        self._err.close()
        os.unlink(self._err.name)


class Group:
    """Load processes that start together, go together and are always stopped (a context manager)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[LoadProc] = []

    def spawn(self, role: str, **args: object) -> LoadProc:
        p = LoadProc(role, args, self.workdir)
        self.procs.append(p)
        return p

    def ready(self, procs: list[LoadProc], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in procs:
            if not p.read(deadline).get("ready"):
                raise RuntimeError(f"{p.role}: unexpected answer before ready")

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.stop()
