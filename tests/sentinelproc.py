"""A real Redis Sentinel set for failover tests: a `redis-server` master, one replica and three
`redis-sentinel` processes on free loopback ports, with short timings (down after 500 ms) so a
failover takes about a second or two. Stopped by PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.redisproc import _read_reply, _resp
from tests.routerproc import free_port, stop_process

MASTER = "mymaster"
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 2000


def command(port: int, *args: str, timeout: float = 2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_resp(args))
        return _read_reply(s.makefile("rb"))


class _Proc:
    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)

    def kill(self) -> None:
        stop_process(self.proc, self._log)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


class SentinelSet:
    def __init__(self, workdir: Path, sentinels: int = 3) -> None:
        self.workdir = workdir
        self.redis_ports = [free_port(), free_port()]  # master first, then the replica
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.redis: dict[int, _Proc] = {}
        self.sentinels: dict[int, _Proc] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def start(self) -> SentinelSet:
        server, sentinel = shutil.which("redis-server"), shutil.which("redis-sentinel")
        if server is None or sentinel is None:
            raise RuntimeError("redis-server and redis-sentinel are needed (Debian: apt-get install -y "
                               "redis-server redis-sentinel)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        master, replica = self.redis_ports
        self.start_redis(master)
        self.start_redis(replica, replicaof=master)
        _wait(lambda: "master_link_status:up" in self.info(replica), 10, "the replica's link to the master")
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                            f"sentinel monitor {MASTER} 127.0.0.1 {master} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
                            f"sentinel parallel-syncs {MASTER} 1\n")
            self.sentinels[port] = _Proc(f"sentinel-{port}", [sentinel, str(conf)], self.workdir)
        for port in self.sentinel_ports:  # every sentinel knows the others and the replica
            _wait(lambda port=port: self._sentinel_state(port).get("num-other-sentinels") == str(
                len(self.sentinel_ports) - 1) and self._sentinel_state(port).get("num-slaves") == "1",
                  15, f"sentinel {port} to see the others")
        return self

    def start_redis(self, port: int, replicaof: int | None = None) -> None:
        argv = [shutil.which("redis-server"), "--save", "", "--appendonly", "no", "--port", str(port),
                "--bind", "127.0.0.1", "--dir", str(self.workdir), "--dbfilename", f"dump-{port}.rdb"]
        if replicaof is not None:
            argv += ["--replicaof", "127.0.0.1", str(replicaof)]
        self.redis[port] = _Proc(f"redis-{port}", argv, self.workdir)
        _wait(lambda: command(port, "PING") == "+PONG", 10, f"redis-server on {port}")

    def info(self, port: int) -> str:
        return command(port, "INFO", "replication")

    def _sentinel_state(self, port: int) -> dict:
        reply = command(port, "SENTINEL", "MASTER", MASTER)
        return dict(zip(reply[::2], reply[1::2], strict=False)) if isinstance(reply, list) else {}

    def master_port(self) -> int:
        """Where the sentinels (the first that answers) say the master is."""
        for port in self.sentinel_ports:
            try:
                return int(command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1])
            except OSError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_master(self) -> int:
        """kill -9 of the master; its port."""
        port = self.master_port()
        self.redis.pop(port).kill()
        return port

    def wait_failover(self, old: int, timeout: float = 15.0) -> int:
        return _wait(lambda: (p := self.master_port()) != old and "role:master" in self.info(p) and p, timeout,
                     "the sentinels to promote the replica")

    def stop(self) -> None:
        for p in [*self.sentinels.values(), *self.redis.values()]:
            p.kill()
        self.sentinels.clear()
        self.redis.clear()
