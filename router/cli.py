"""The `courtyard` command line: start a node, check a config."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.logger import Logger

from router import __version__, logs
from router.config import ConfigError, load, warnings
from router.starter import CONFIG_NAME, default_config

log = Logger()


def _config(args: argparse.Namespace, quiet: bool = False):
    """The validated config, or None after saying on stderr everything that is wrong, one error a
    line; warnings (the config works, but likely not as meant) go to stderr too, unless `quiet`."""
    if args.config is None:
        args.config = default_config()
    try:
        cfg = load(args.config, getattr(args, "workers", None))
    except ConfigError as e:
        errors = getattr(e, "errors", [e])
        print(f"courtyard: invalid config ({len(errors)} error{'s' if len(errors) > 1 else ''}):", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return None
    if getattr(args, "worker_index", None) is None and not quiet:  # a worker's supervisor said them already
        for warning in warnings(cfg):
            print(f"courtyard: warning: {warning}", file=sys.stderr)
    return cfg


def _stored_changes(cfg) -> bool:
    """Read `admin.data_dir`'s database (read-only) and lay it over the config's realms, as start
    does; False after saying on stderr what is wrong with it."""
    from realms.checks import check_realm
    from realms.registry import RealmRegistry
    from realms.store import RealmStore, StoreError, store_path

    if cfg.cluster is not None:  # the changes are in Redis, which check-config does not reach
        print("realm and user changes are kept in the cluster's Redis (cluster:), not in admin.data_dir")
        return True
    path = store_path(cfg.data_dir)
    registry = RealmRegistry([*cfg.realms, cfg.admin_realm])
    try:
        store = RealmStore(path, readonly=True)
        try:
            store.apply(registry)
            overrides = store.overrides()
        finally:
            store.close()
    except StoreError as e:
        print(f"courtyard: {e}", file=sys.stderr)
        return False
    if overrides:  # the admin change wins over the file: say where the running node will differ
        print(f"admin database {path} overrides the config file:")
        for line in overrides:
            print(f"  {line}")
        for realm in registry.list():  # what the admin realm let through before it checked, or by hand
            for error in check_realm(realm, f"realm {realm.uri} (with the admin changes)")[0]:
                print(f"courtyard: warning: {error}", file=sys.stderr)
    return True


def _redis_client(cfg, prefix: str = "") -> bool:
    """A cluster needs the Redis client (the `redis` extra); False after saying so on stderr."""
    if cfg.cluster is None:
        return True
    try:
        import txredisapi  # noqa: F401 - only to say clearly that the extra is missing
    except ImportError:
        print(f"courtyard: {prefix}cluster: needs the Redis client: pip install 'courtyard[redis]'", file=sys.stderr)
        return False
    return True


def _ports_free(cfg) -> None:
    """Warn about each listener's host and port that cannot be bound now (start would fail, exit 2);
    one held by this config's own running node (its pid file) is only noted. A warning, not an error:
    the port may be free by the time the node starts."""
    import errno
    import socket

    from router import control

    for i, lc in enumerate(cfg.listeners):
        if lc.endpoint is not None or lc.port == 0:
            continue
        family = socket.AF_INET6 if ":" in lc.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted listens: TIME_WAIT is no conflict
            try:
                s.bind((lc.host, lc.port))
                continue
            except OSError as e:
                problem = e
        pid = control.read_pid(cfg.pid_file) if cfg.pid_file else None
        if problem.errno == errno.EADDRINUSE and pid is not None and control.is_courtyard(pid):
            print(f"note: listeners[{i}]: {lc.host}:{lc.port} is in use by this config's running node (pid {pid})")
            continue
        what = "is in use (by another program?)" if problem.errno == errno.EADDRINUSE else \
            f"cannot be bound: {problem.strerror}"
        print(f"courtyard: warning: listeners[{i}].port: {lc.host}:{lc.port} {what} now: start would fail",
              file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None or not _stored_changes(cfg) or not _redis_client(cfg):
        return 2
    _ports_free(cfg)
    print(f"config OK ({args.config or 'the embedded default'}): {len(cfg.listeners)} listener(s), "
          f"realms: {', '.join(r.uri for r in cfg.realms)}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return 2
    if not _redis_client(cfg, "cannot start: "):
        return 2
    worker = args.worker_index
    if worker is not None:
        import signal

        # A terminal's Ctrl-C reaches the whole process group: the supervisor alone decides, and sends
        # SIGTERM (Twisted leaves an ignored SIGINT ignored).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if cfg.cluster is None:
            print("courtyard: cannot start: a worker (--worker-index) needs a cluster: section", file=sys.stderr)
            return 2
        cfg.cluster.node_id = f"{args.worker_node_id or cfg.cluster.node_id}-w{worker}"
    logs.set_node(cfg.cluster.node_id if cfg.cluster is not None else cfg.name)
    try:
        logs.begin(args.log_level, args.log_format, args.log_file, None if worker is None else f"w{worker}")
    except OSError as e:
        print(f"courtyard: cannot write the log file {args.log_file}: {e.strerror}", file=sys.stderr)
        return 2
    if worker is None and cfg.workers > 1:
        return _supervise(args, cfg)  # without the router's modules: the supervisor routes nothing
    from twisted.internet import reactor

    from realms.store import StoreError
    from router.node import Node

    if args.log_level == "debug":  # each routed message, one line (off: one flag read per message)
        from router import protocol

        protocol.trace(True)
    if cfg.cluster is not None:
        return _run_cluster_node(cfg, args, worker is not None, args.worker_restart)
    try:
        node = Node(cfg)
    except StoreError as e:  # a damaged admin database: name it, say what to do, no traceback
        print(f"courtyard: cannot start: {e}", file=sys.stderr)
        return 2
    try:
        node.start()
    except Exception as e:  # a port in use, an address not here: the environment's, like a config error
        if args.log_file is not None:  # the log file has it too; on stdout one line is enough
            log.critical("cannot start: {e}", e=e)
        print(f"courtyard: cannot start: {e}", file=sys.stderr)
        return 2
    _serving(node, args)  # the pid file is there before the log says "started"
    _started(node, args.config)
    reactor.run()
    return 0


def _serving(node, args: argparse.Namespace) -> None:
    """Once listening: SIGHUP reloads (router/reload.py), the pid file is written (not by a worker:
    its supervisor's is the node's), systemd hears READY=1; at shutdown STOPPING=1, and the pid file goes."""
    from twisted.internet import reactor

    from router import control, systemd
    from router.reload import Reloader

    Reloader(node, args.config, args.workers, notify=args.worker_index is None).install()
    pid_file = node.config.pid_file if args.worker_index is None else None
    try:
        control.write_pid(pid_file)
    except OSError as e:
        log.error("cannot write the pid file {path}: {e} (courtyard stop and status will not find the node)",
                  path=pid_file, e=e.strerror)
    if args.worker_index is None:  # a worker's readiness goes to its supervisor, which tells systemd
        systemd.ready(f"serving {', '.join(r.uri for r in node.realms.list())}")

    def stopping():
        if args.worker_index is None:
            systemd.stopping()
        return node.stop()

    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    reactor.addSystemEventTrigger("after", "shutdown", control.remove_pid, pid_file)


def _supervise(args: argparse.Namespace, cfg) -> int:
    """`--workers N`: this process runs `courtyard start` N times as workers and supervises them
    (router/workers.py). Each gets the same arguments and the same base node id."""
    import os

    from router import workers

    argv = [sys.executable, "-m", "router.cli", "start", "--log-level", args.log_level, "--log-format",
            args.log_format, "--workers", str(cfg.workers), "--worker-node-id", cfg.cluster.node_id]
    if args.config is not None:
        argv += ["-c", os.path.abspath(args.config)]
    if args.log_file is not None:
        argv += ["--log-file", os.path.abspath(args.log_file)]
    log.info("Courtyard {v}: supervising {n} workers, cluster node ids {id}-w0..w{last}; config: {config}",
             v=__version__, n=cfg.workers, id=cfg.cluster.node_id, last=cfg.workers - 1,
             config=args.config or "the embedded default")
    from twisted.internet import reactor

    from router import control, systemd

    def ready() -> None:
        try:
            control.write_pid(cfg.pid_file)
        except OSError as e:
            log.error("cannot write the pid file {path}: {e}", path=cfg.pid_file, e=e.strerror)
        systemd.ready(f"{cfg.workers} workers serving")

    reactor.addSystemEventTrigger("before", "shutdown", systemd.stopping)
    reactor.addSystemEventTrigger("after", "shutdown", control.remove_pid, cfg.pid_file)
    return workers.supervise(argv, cfg.workers, cfg.shutdown_grace, ready)


def _started(node, config_file: str | None) -> None:
    log.info("Courtyard {v} started in {t:.3f}s; config: {config}; realms: {realms}", v=__version__,
             t=node.started, config=config_file or "the embedded default",
             realms=", ".join(r.uri for r in node.realms.list()))
    from router import memory

    memory.start()  # freed memory back to the system after a load (router/memory.py)


def _run_cluster_node(cfg, args: argparse.Namespace, worker: bool = False, restart: bool = False) -> int:
    """A cluster node: Redis first (unreachable: one line naming the URL, exit 2), then the node is built
    with its cluster parts and listens. A worker removes its dead predecessor's state first (`restart`)
    and tells its supervisor once it serves."""
    from twisted.internet import defer, reactor

    from router.cluster.connection import RedisUnavailable
    from router.node import Node

    config_file = args.config
    outcome = {"code": 0}
    node: Any = None

    def fail(code: int, line: str) -> None:
        print(f"courtyard: cannot start: {line}", file=sys.stderr)
        outcome["code"] = code
        reactor.stop()

    def joined(_) -> None:
        try:
            node.start()
        except Exception as e:  # a port in use, an address not here
            return fail(2, str(e))
        log.info("cluster node {id} joined on Redis at {url}", id=node.config.cluster.node_id,
                 url=node.config.cluster.redis.display())
        _serving(node, args)
        _started(node, config_file)
        if worker:
            from router.workers import worker_started

            worker_started()

    def not_joined(failure) -> None:
        if failure.check(RedisUnavailable):
            return fail(2, failure.getErrorMessage())
        log.failure("joining the cluster failed", failure=failure)
        return fail(1, f"joining the cluster failed: {failure.getErrorMessage()}")

    def built(made: Any) -> Any:
        nonlocal node
        node = made
        node.shared_ports = worker
        d = node.join_cluster()
        if restart:
            from router.workers import purge_predecessor

            d.addCallback(lambda _: purge_predecessor(node))
        return d

    def join():
        return Node.connect(cfg).addCallback(built)

    reactor.callWhenRunning(lambda: defer.maybeDeferred(join).addCallbacks(joined, not_joined))
    reactor.run()
    return outcome["code"]


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the config's JSON Schema (config/courtyard.schema.json is this output)."""
    from router.config_schema import dumps

    sys.stdout.write(dumps())
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from router.starter import init

    return init(args.directory)


def cmd_auth_hash_secret(args: argparse.Namespace) -> int:
    """Print config for a user's secret: a ticket hash, or a salted WAMP-CRA key."""
    import getpass

    secret = args.secret if args.secret is not None else getpass.getpass("secret: ")
    if args.wampcra:
        from realms.secrets import salted_cra

        cra = salted_cra(secret, args.iterations)
        print(f"wampcra: {{key: {cra['key']}, salt: {cra['salt']}, iterations: {args.iterations}, keylen: 32}}")
    else:
        from realms.secrets import hash_secret

        print(f"ticket: {hash_secret(secret)}")
    return 0


def cmd_auth_keygen(args: argparse.Namespace) -> int:
    """Print a new Ed25519 key pair for cryptosign: the private key for the client, the public for config."""
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    print(f"private key (give to the client, keep secret): {key.encode().hex()}")
    print(f"public key (config: users.<authid>.cryptosign): {key.verify_key.encode().hex()}")
    return 0


def _workers(text: str) -> int:
    """--workers N: an integer here; its range is the config's (node.workers), checked there."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line on stderr and exit 2 (sub-commands inherit this class)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="courtyard", description="Courtyard, a WAMP v2 router")
    parser.add_argument("--version", action="version", version=f"courtyard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="run a router node in the foreground")
    p.add_argument("-c", "--config", help=f"YAML config file (default: ./{CONFIG_NAME} if there is one, "
                                                "else the embedded default config)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.add_argument("--log-format", default="text", choices=logs.FORMATS,
                   help="text for people, or json: one JSON object a line with the event's fields")
    p.add_argument("--log-file", metavar="PATH", help="append the log to this file (default: stdout)")
    p.add_argument("--workers", type=_workers, metavar="N",
                   help="run N router processes sharing the ports, one cluster on cluster:'s Redis "
                   "(overrides node.workers; more than 1 needs a cluster: section)")
    # A worker of `--workers N`, started by its supervisor (router/workers.py): not for people.
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-node-id", help=argparse.SUPPRESS)
    p.add_argument("--worker-restart", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("-c", "--config", help=f"YAML config file (default: ./{CONFIG_NAME} if there is one, "
                                                "else the embedded default config)")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("init", help=f"write a starter {CONFIG_NAME} (every section at its defaults) and a data "
                                    "directory")
    p.add_argument("directory", nargs="?", default=".", help="where (made if missing; default: here)")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("schema", help="print the config file's JSON Schema (for editors)")
    p.set_defaults(func=cmd_schema)
    auth_cmd = sub.add_parser("auth", help="make secrets and keys for the config")
    auth = auth_cmd.add_subparsers(dest="auth", required=True)
    p = auth.add_parser("hash-secret", help="print a salted hash of a ticket (or a salted WAMP-CRA key)")
    p.add_argument("secret", nargs="?", help="the secret (prompted for if not given)")
    p.add_argument("--wampcra", action="store_true", help="print a salted WAMP-CRA key instead of a ticket hash")
    p.add_argument("--iterations", type=int, default=1000, help="PBKDF2 iterations for --wampcra")
    p.set_defaults(func=cmd_auth_hash_secret)
    p = auth.add_parser("keygen", help="print a new Ed25519 key pair for cryptosign")
    p.set_defaults(func=cmd_auth_keygen)
    from router import admin_client, control

    control.add_parsers(sub, f"YAML config file of the node (default: ./{CONFIG_NAME} if there is one, else the "
                             "embedded default config)", lambda a: _config(a, quiet=True))
    admin_client.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
