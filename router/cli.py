"""The `courtyard` command line: start a node, check a config."""

from __future__ import annotations

import argparse
import sys

from twisted.logger import Logger

from router import __version__
from router.config import ConfigError, load

log = Logger()


def _setup_logging(level: str) -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(textFileLogObserver(sys.stdout), [predicate])],
                                     redirectStandardIO=False)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"courtyard: invalid config: {e}", file=sys.stderr)
        return 2
    print(f"config OK: {len(cfg.listeners)} listener(s), realms: {', '.join(r.uri for r in cfg.realms)}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"courtyard: invalid config: {e}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    from router.node import Node

    _setup_logging(args.log_level)
    node = Node(cfg)
    try:
        node.start()
    except Exception as e:  # a port in use, an address not here: say so and exit non-zero
        log.critical("cannot start: {e}", e=e)
        return 1
    log.info("Courtyard {v} started in {t:.3f}s; realms: {realms}", v=__version__, t=node.started,
             realms=", ".join(r.uri for r in node.realms.list()))
    reactor.addSystemEventTrigger("before", "shutdown", node.stop)
    reactor.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="courtyard", description="Courtyard, a WAMP v2 router")
    parser.add_argument("--version", action="version", version=f"courtyard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="run a router node in the foreground")
    p.add_argument("-c", "--config", help="YAML config file (default: the embedded default config)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("-c", "--config", help="YAML config file (default: the embedded default config)")
    p.set_defaults(func=cmd_check_config)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
