"""Client-side shards or Redis Cluster for the bus (issue 22): Redis CPU per message per shard, measured.

    .venv/bin/python -m bench.redis_shards [--shards 3] [--messages 200000]

Three set-ups of `--shards` redis-servers of its own (loopback, free ports, no persistence), each with
one subscriber per shard listening on one channel per shard (as each node listens on its own data
channel), and one publisher sending `--messages` messages of 200 bytes spread evenly over the channels:

- `client-side`: independent servers; each message is PUBLISHed to the server its channel hashes to
  (what Courtyard does: router/cluster/bus.py `shard_of`);
- `cluster-publish`: one Redis Cluster; classic PUBLISH, which Redis Cluster copies to every shard;
- `cluster-spublish`: the same cluster; sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7), each channel
  on its slot's shard.

Reported: each shard's CPU (user + system, from /proc) per message published, and their sum.
Clients are raw sockets with pipelined RESP: the point is Redis's cost, not a client's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

PAYLOAD = b"x" * 200
BATCH = 1000  # commands per pipelined write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too: a taken bus port leaves
    `redis-cli --cluster create` waiting for the cluster to join."""
    for _ in range(1000):
        port = _free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no port pair free for a Redis Cluster node")


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _resp(*args: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _command(port: int, *args: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(_resp(*args))
        return s.recv(65536)


def _server(port: int, workdir: str, cluster: bool) -> subprocess.Popen:
    argv = [shutil.which("redis-server") or "redis-server", "--save", "", "--appendonly", "no", "--port", str(port),
            "--bind", "127.0.0.1", "--dir", workdir]
    if cluster:
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if _command(port, "PING").startswith(b"+PONG"):
                return proc
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server on {port} did not start")


def _slot_channels(ports: list[int]) -> list[tuple[int, str]]:
    """One channel per shard that the cluster puts on that shard (CLUSTER KEYSLOT, CLUSTER SLOTS)."""
    raw = subprocess.run(["redis-cli", "-p", str(ports[0]), "--json", "CLUSTER", "SLOTS"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    ranges = [(r[0], r[1], r[2][1]) for r in json.loads(raw)]
    found: dict[int, str] = {}
    for i in range(10_000):
        name = f"cy:bus:data:n{i}"
        slot = int(_command(ports[0], "CLUSTER", "KEYSLOT", name)[1:].split(b"\r\n")[0])
        found.setdefault(next(p for lo, hi, p in ranges if lo <= slot <= hi), name)
        if len(found) == len(ports):
            break
    return [(p, found[p]) for p in ports]


class _Subscriber(threading.Thread):
    """One connection subscribed to one channel, counting the bytes it reads until told to stop."""

    def __init__(self, port: int, channel: str, sharded: bool) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(_resp("SSUBSCRIBE" if sharded else "SUBSCRIBE", channel))
        self.sock.recv(4096)
        self.received = 0
        self.running = True

    def run(self) -> None:
        self.sock.settimeout(0.5)
        while self.running:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                return
            self.received += len(data)


def _publish(targets: list[tuple[int, str]], n: int, verb: str) -> None:
    """`n` messages over the channels in turn, each to its port, pipelined; replies read as they come."""
    socks = {port: socket.create_connection(("127.0.0.1", port), timeout=30) for port, _ in targets}
    pending = dict.fromkeys(socks, 0)
    buffers: dict[int, list[bytes]] = {port: [] for port in socks}
    for i in range(n):
        port, channel = targets[i % len(targets)]
        buffers[port].append(_resp(verb, channel, PAYLOAD))
        if len(buffers[port]) >= BATCH or i == n - 1:
            for p, buf in buffers.items():
                if buf:
                    socks[p].sendall(b"".join(buf))
                    pending[p] += len(buf)
                    buf.clear()
            for p, s in socks.items():  # read every reply of this round (":1\r\n" each)
                tail = b""
                while pending[p]:
                    data = tail + s.recv(1 << 20)
                    if not data:
                        raise RuntimeError(f"redis-server on {p} closed the connection")
                    pending[p] -= data.count(b"\r\n")
                    tail = data[data.rfind(b"\r\n") + 2:] if b"\r\n" in data else data
    for s in socks.values():
        s.close()


def _run(name: str, ports: list[int], pids: list[int], targets: list[tuple[int, str]], n: int, verb: str,
         sharded: bool) -> dict:
    subs = [_Subscriber(port, channel, sharded) for port, channel in targets]
    for s in subs:
        s.start()
    time.sleep(0.3)
    before = [_cpu(p) for p in pids]
    t0 = time.perf_counter()
    _publish(targets, n, verb)
    time.sleep(0.5)  # the last deliveries
    wall = time.perf_counter() - t0
    cpu = [_cpu(p) - b for p, b in zip(pids, before, strict=True)]
    for s in subs:
        s.running = False
    per_shard = [round(1e6 * c / n, 3) for c in cpu]
    return {"setup": name, "messages": n, "us_per_message_by_shard": per_shard,
            "us_per_message_total": round(sum(per_shard), 3), "wall_s": round(wall, 2),
            "delivered_bytes": sum(s.received for s in subs)}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.redis_shards")
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--messages", type=int, default=200_000)
    args = p.parse_args()
    if not 3 <= args.shards <= 8 or not 1000 <= args.messages <= 5_000_000:
        p.error("--shards 3..8 (a Redis Cluster needs three masters), --messages 1000..5000000")
    rows = []
    with tempfile.TemporaryDirectory(prefix="courtyard-shards-") as tmp:
        ports = [_free_port() for _ in range(args.shards)]
        procs = [_server(port, tmp, False) for port in ports]
        try:
            names = {}
            for i in range(10_000):  # one channel per shard, by Courtyard's own hash (bus.shard_of)
                from router.cluster.bus import shard_of

                names.setdefault(shard_of(f"n{i}", args.shards), f"cy:bus:data:n{i}")
                if len(names) == args.shards:
                    break
            targets = [(ports[i], names[i]) for i in range(args.shards)]
            rows.append(_run("client-side", ports, [pr.pid for pr in procs], targets, args.messages, "PUBLISH", False))
        finally:
            for pr in procs:
                pr.kill()
                pr.wait()
        ports = [_cluster_port() for _ in range(args.shards)]
        procs = [_server(port, tmp, True) for port in ports]
        try:
            subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                            "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, timeout=30, check=True)
            deadline = time.monotonic() + 20
            while b"cluster_state:ok" not in _command(ports[0], "CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not become ok")
                time.sleep(0.1)
            targets = _slot_channels(ports)
            pids = [pr.pid for pr in procs]
            # classic PUBLISH may go to any node: each to the node its channel's slot is on, as a client would
            rows.append(_run("cluster-publish", ports, pids, targets, args.messages, "PUBLISH", False))
            rows.append(_run("cluster-spublish", ports, pids, targets, args.messages, "SPUBLISH", True))
        finally:
            for pr in procs:
                pr.kill()
                pr.wait()
    print(json.dumps({"shards": args.shards, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
