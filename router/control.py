"""`courtyard status` and `courtyard stop`: find a running node from its config, as `start -c FILE`
does, by the pid file it wrote (`node.pid_file`, default `{data_dir}/courtyard.pid`) and its HTTP
endpoints (/health, /status.json on the first WebSocket listener).

Exit codes (docs/operations.md):
  status: 0 running and healthy; 1 not running, but a pid file was left (removed); 3 not running;
          4 running but /health does not say ok (stopping, Redis unreachable, no answer); 2 bad config.
  stop:   0 stopped (or was not running); 1 still running after --timeout; 2 bad config or no pid file
          configured.
  reload: 0 SIGHUP sent (the config checked first, as check-config does); 2 bad config (not sent);
          3 not running.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

RUNNING, STALE, UNHEALTHY, NOT_RUNNING = 0, 1, 4, 3


def write_pid(path: str | None) -> None:
    """The pid file, written whole (a temporary file renamed over it); its directory made if missing."""
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, p)


def remove_pid(path: str | None) -> None:
    """Remove the pid file if it still names this process (a node started since keeps its own)."""
    if path is not None and read_pid(path) == os.getpid():
        try:
            os.unlink(path)
        except OSError:
            pass


def read_pid(path: str) -> int | None:
    try:
        text = Path(path).read_text()[:32].strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_courtyard(pid: int) -> bool:
    """The pid is alive and a Courtyard process (not another program that got the number later)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's: we cannot signal it anyway
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid file
    return b"courtyard" in cmdline or b"router.cli" in cmdline


def _running(cfg: Any) -> tuple[int | None, bool]:
    """(the pid from the pid file, whether it is a running Courtyard process)."""
    pid = read_pid(cfg.pid_file) if cfg.pid_file else None
    return pid, pid is not None and is_courtyard(pid)


Target = tuple[str, int, bool]  # host, port, TLS


def _http_target(cfg: Any) -> Target | None:
    """Where the node answers /health: its first WebSocket listener with a host and a fixed port
    (plain ones first)."""
    if not cfg.http.health:
        return None
    found = [lc for lc in cfg.listeners if lc.type == "websocket" and lc.endpoint is None and lc.port]
    for lc in sorted(found, key=lambda lc: lc.tls is not None):
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(lc.host, lc.host)
        return host, lc.port, lc.tls is not None
    return None


def _get(target: Target, path: str, timeout: float = 3.0) -> tuple[int, Any] | None:
    host, port, tls = target
    if tls:  # the node's own certificate, asked on its own host: who answers is known, not verified
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read(1024 * 1024)
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 86400}d {s // 3600 % 24}h {s // 60 % 60}m {s % 60}s" if s >= 86400 else \
        f"{s // 3600}h {s // 60 % 60}m {s % 60}s" if s >= 3600 else f"{s // 60}m {s % 60}s"


def _peers(cfg: Any, target: Target, login: argparse.Namespace) -> list | str:
    """The cluster's nodes from the admin realm (courtyard.node.list), logged in as `login` says;
    a short reason instead when that cannot be done."""
    from router import admin_client

    if login.ticket is None and login.key is None:
        return "give --ticket or --key (or COURTYARD_ADMIN_TICKET / COURTYARD_ADMIN_KEY) to list them"
    signer = None
    if login.key is not None:
        from nacl.signing import SigningKey

        try:
            signer = SigningKey(bytes.fromhex(login.key))
        except Exception:
            return "--key must be an Ed25519 private key, 64 hex characters"
    if target[2]:
        return "the admin realm over wss:// is not asked by status: use courtyard admin --cafile ... nodes list"
    host = f"[{target[0]}]" if ":" in target[0] else target[0]
    path = next((lc.path for lc in cfg.listeners if lc.port == target[1]), "/ws")
    args = argparse.Namespace(url=f"ws://{host}:{target[1]}{path}", login_authid=login.authid,
                              login_ticket=login.ticket, admin_realm=cfg.admin_realm.uri, timeout=10.0, json=True,
                              spec=admin_client.ACTIONS["nodes"]["list"])
    outcome = admin_client._call(args, None, target[0], target[1], signer, "courtyard.node.list", [], {})
    return outcome["result"] if "result" in outcome else f"admin realm: {outcome.get('error')}"


def status(cfg: Any, as_json: bool = False, login: argparse.Namespace | None = None) -> int:
    pid, alive = _running(cfg)
    target = _http_target(cfg)
    health = _get(target, "/health") if target else None
    info = {"running": alive or health is not None, "pid": pid if alive else None, "pid_file": cfg.pid_file}
    if health is not None and target is not None:
        code, body = health
        info.update(health=(body or {}).get("status", f"HTTP {code}"), node=(body or {}).get("node"),
                    url=f"http{'s' if target[2] else ''}://{target[0]}:{target[1]}/health")
        detail = _get(target, "/status.json")
        if detail is not None and detail[0] == 200 and isinstance(detail[1], dict):
            d = detail[1]
            info.update(node_id=d.get("node_id"), uptime=d.get("uptime"), sessions=d.get("sessions"),
                        connections=d.get("connections"))
        elif isinstance(body, dict):
            info["sessions"] = body.get("sessions")
        if cfg.cluster is not None and login is not None:
            info["cluster"] = _peers(cfg, target, login)
    code = (RUNNING if info.get("health") == "ok" else UNHEALTHY) if info["running"] else \
        STALE if pid is not None else NOT_RUNNING
    if code == STALE:  # the node died without removing it: say so once, and clear it
        try:
            os.unlink(cfg.pid_file)
        except OSError:
            pass
    if as_json:
        print(json.dumps(info))
        return code
    if not info["running"]:
        left = f" (pid file {cfg.pid_file} named pid {pid}, which is gone: removed)" if code == STALE else ""
        print(f"not running{left}")
        return code
    lines = [f"running: {'pid ' + str(pid) if alive else 'pid unknown (no pid file)'}"]
    if health is None:
        lines.append(f"health: no answer{'' if target else ' (no WebSocket listener with host and port to ask)'}")
    else:
        shown = {"health": info.get("health"), "node": info.get("node"), "node id": info.get("node_id"),
                 "uptime": None if info.get("uptime") is None
                 else _uptime(info["uptime"]), "sessions": info.get("sessions"),
                 "connections": info.get("connections")}
        lines += [f"{k}: {v}" for k, v in shown.items() if v is not None]
        peers = info.get("cluster")
        if isinstance(peers, list):
            lines.append(f"cluster: {len(peers)} node(s): " + ", ".join(
                f"{n.get('id')} ({n.get('sessions')} sessions)" for n in peers if isinstance(n, dict)))
        elif peers is not None:
            lines.append(f"cluster: {peers}")
    print("\n".join(lines))
    return code


def stop(cfg: Any, timeout: float | None = None) -> int:
    """SIGTERM, then wait for the graceful shutdown (GOODBYE to every session, the grace period)."""
    if cfg.pid_file is None:
        print("courtyard stop: no pid file (node.pid_file is null, or admin.data_dir is null and node.pid_file "
              "not set): cannot find the node", file=sys.stderr)
        return 2
    pid, alive = _running(cfg)
    if not alive or pid is None:
        print("not running" + (f" (stale pid file {cfg.pid_file} removed)" if pid is not None else ""))
        if pid is not None:
            try:
                os.unlink(cfg.pid_file)
            except OSError:
                pass
        return 0
    wait = timeout if timeout is not None else cfg.shutdown_grace + 10.0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("stopped")
        return 0
    except PermissionError:
        print(f"courtyard stop: not allowed to signal pid {pid} (another user's)", file=sys.stderr)
        return 1
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not is_courtyard(pid):
            print(f"stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"courtyard stop: pid {pid} still running {wait:g}s after SIGTERM", file=sys.stderr)
    return 1


def reload(cfg: Any) -> int:
    """SIGHUP to the node, once its config has passed the checks it will make (so a broken one is
    said here, on stderr, as well as refused there)."""
    pid, alive = _running(cfg)
    if not alive or pid is None:
        print("not running", file=sys.stderr)
        return NOT_RUNNING
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        print(f"courtyard reload: cannot signal pid {pid}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"reload asked of pid {pid} (its log says what changed)")
    return 0


def add_parsers(sub: Any, config_help: str, load_config: Any) -> None:
    """`status`, `stop` and `reload`, each with -c like start."""
    p = sub.add_parser("status", help="is the node of this config running: pid, health, node id, uptime, sessions")
    p.add_argument("-c", "--config", help=config_help)
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--authid", default=os.environ.get("COURTYARD_ADMIN_AUTHID", "admin"),
                   help="a cluster node's peers come from the admin realm: log in as this admin.users authid")
    p.add_argument("--ticket", default=os.environ.get("COURTYARD_ADMIN_TICKET"), help="... by ticket")
    p.add_argument("--key", default=os.environ.get("COURTYARD_ADMIN_KEY"), help="... or by cryptosign")
    p.set_defaults(func=lambda a: _with(a, load_config, lambda cfg: status(cfg, a.json, a)))
    p = sub.add_parser("stop", help="stop the node of this config (SIGTERM) and wait for its graceful shutdown")
    p.add_argument("-c", "--config", help=config_help)
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="how long to wait (default: shutdown.grace_period + 10)")
    p.set_defaults(func=lambda a: _with(a, load_config, lambda cfg: stop(cfg, a.timeout)))
    p = sub.add_parser("reload", help="check the config, then make the node of this config reload it (SIGHUP)")
    p.add_argument("-c", "--config", help=config_help)
    p.set_defaults(func=lambda a: _with(a, load_config, reload))


def _with(args: argparse.Namespace, load_config: Any, run: Any) -> int:
    cfg = load_config(args)
    return 2 if cfg is None else run(cfg)
