"""The router under test: its own `courtyard start` process on free loopback ports (a WebSocket and a
RawSocket listener), its RSS from /proc, and what its log says. Only this process is ever signalled,
by its own PID."""

from __future__ import annotations

import os
import re
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


def rss_mb(pid: int) -> float | None:
    """VmRSS from /proc/PID/status, in MB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def self_signed(workdir: Path) -> dict:
    """A certificate and key for 127.0.0.1 in `workdir`: a listener's `tls` section (`--tls`)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (workdir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return {"certificate": str(workdir / "cert.pem"), "key": str(workdir / "key.pem")}


class Router:
    def __init__(self, workdir: Path, hello_timeout: float = 3.0, tls: bool = False) -> None:
        """`tls`: both listeners speak TLS (wss:// and RawSocket over TLS), with a self-signed certificate."""
        self.ws_port = free_port()
        self.rs_port = free_port()
        sers = ["json", "msgpack", "cbor"]
        config = {
            "listeners": [
                {"type": "websocket", "host": "127.0.0.1", "port": self.ws_port, "path": "/ws",
                 "serializers": sers, "hello_timeout": hello_timeout},
                {"type": "rawsocket", "host": "127.0.0.1", "port": self.rs_port, "serializers": sers,
                 "hello_timeout": hello_timeout},
            ],
            "admin": {"data_dir": None},
            "shutdown": {"grace_period": 0.5},  # fuzzed peers rarely answer GOODBYE
        }
        if tls:
            section = self_signed(workdir)
            for listener in config["listeners"]:
                listener["tls"] = section
        self.config_path = workdir / "router.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "router.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Router:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "router.cli", "start", "-c", str(self.config_path),
                                          "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        for port in (self.ws_port, self.rs_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"router exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"router not listening on {port} after {timeout}s: {self.log_tail()}")
                    time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> float | None:
        return rss_mb(self.pid) if self.alive() else None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s: our own process only, by PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass

    def log_tail(self, n: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 4000))
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""


_NUMBER = re.compile(r"(?<=position )\d+|\b\d{4,}\b")
_EXC_LINE = re.compile(r"^\s*(?:builtins\.)?([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b:?(.*)$")


def scan_log(path: Path, max_chars: int = 200) -> dict:
    """Count traceback lines ("Traceback" or "Unhandled"), the distinct exceptions they end in, the
    longest line; streaming, so a huge log costs no memory."""
    tracebacks = 0
    longest = 0
    lines = 0
    distinct: dict[str, int] = {}
    in_tb = False
    with open(path, "rb") as f:
        for raw in f:
            lines += 1
            longest = max(longest, len(raw))
            line = raw[:4000].decode("utf-8", "replace").rstrip("\n")
            if "Traceback" in line or "Unhandled" in line:
                tracebacks += 1
                in_tb = True
                continue
            if in_tb:
                m = _EXC_LINE.match(line)
                if m and not line.lstrip().startswith("File "):
                    key = _NUMBER.sub("N", f"{m.group(1)}:{m.group(2)[:max_chars]}")  # one entry per kind
                    distinct[key] = distinct.get(key, 0) + 1
                    in_tb = False
    return {"tracebacks": tracebacks, "exceptions": distinct, "longest_line": longest, "lines": lines}
