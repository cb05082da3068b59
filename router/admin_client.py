"""`courtyard admin ...`: call the admin realm's procedures over WAMP and print the answer, as a
table for people or JSON for scripts. Exit 0 on success, 1 with the WAMP error on failure."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

# (group, action) → procedure, and how the command line maps to its arguments.
COMMANDS: dict[tuple[str, str], str] = {
    ("realms", "list"): "courtyard.realm.list", ("realms", "get"): "courtyard.realm.get",
    ("realms", "create"): "courtyard.realm.create", ("realms", "update"): "courtyard.realm.update",
    ("realms", "delete"): "courtyard.realm.delete",
    ("sessions", "count"): "courtyard.session.count", ("sessions", "list"): "courtyard.session.list",
    ("sessions", "get"): "courtyard.session.get", ("sessions", "kill"): "courtyard.session.kill",
    ("sessions", "kill-by-authid"): "courtyard.session.kill_by_authid",
    ("sessions", "activity"): "courtyard.session.activity",
    ("users", "list"): "courtyard.user.list", ("users", "get"): "courtyard.user.get",
    ("users", "add"): "courtyard.user.add", ("users", "update"): "courtyard.user.update",
    ("users", "remove"): "courtyard.user.remove",
    ("nodes", "list"): "courtyard.node.list",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("admin", help="manage a running router through its admin realm")
    p.add_argument("--url", default=os.environ.get("COURTYARD_URL", "ws://127.0.0.1:8080/ws"))
    p.add_argument("--admin-realm", default="courtyard.admin", help="the admin realm to join")
    p.add_argument("--authid", default=os.environ.get("COURTYARD_ADMIN_AUTHID", "admin"))
    p.add_argument("--ticket", default=os.environ.get("COURTYARD_ADMIN_TICKET"),
                   help="ticket secret (or COURTYARD_ADMIN_TICKET)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("group", choices=sorted({g for g, _ in COMMANDS}))
    p.add_argument("action")
    p.add_argument("args", nargs="*", help="positional arguments (ids, names)")
    p.add_argument("--realm", help="sessions list/count: only this realm")
    p.add_argument("--authid-filter", dest="authid_filter", help="sessions list: only this authid")
    p.add_argument("--reason", help="sessions kill: GOODBYE reason URI")
    p.add_argument("--message", help="sessions kill: GOODBYE message")
    p.add_argument("--role", help="users add: the user's role")
    p.add_argument("--secret", help="users add/update: the user's ticket (hashed by the router)")
    p.add_argument("--wampcra", help="users add/update: the user's WAMP-CRA secret (kept as a salted key)")
    p.add_argument("--definition", help="realms create: the realm definition as JSON; realms update: the changes")
    p.set_defaults(func=run)


def _call_args(args: argparse.Namespace) -> tuple[list, dict]:
    """Positional arguments convert numbers (session ids, dt); options become kwargs."""
    pos: list[Any] = [int(a) if a.lstrip("-").isdigit() else a for a in args.args]
    kw: dict[str, Any] = {}
    if args.realm:
        kw["realm"] = args.realm
    if args.authid_filter:
        kw["authid"] = args.authid_filter
    for key in ("reason", "message", "role"):
        if getattr(args, key):
            kw[key] = getattr(args, key)
    if args.secret:
        kw["ticket"] = args.secret
    if args.wampcra:
        kw["wampcra"] = args.wampcra
    if args.definition:
        kw["changes" if args.action == "update" else "definition"] = json.loads(args.definition)
    return pos, kw


def render(result: Any) -> str:
    """A readable table: a list of ids or names one a line, a list of mappings as columns, a mapping
    as key/value rows."""
    if isinstance(result, list) and result and all(isinstance(x, dict) for x in result):
        cols = list(dict.fromkeys(k for row in result for k in row))
        rows = [[str(row.get(c, "")) for c in cols] for row in result]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                         for line in [cols, *rows])
    if isinstance(result, list):
        return "\n".join(str(x) for x in result) if result else "(none)"
    if isinstance(result, dict):
        width = max((len(str(k)) for k in result), default=0)
        return "\n".join(f"{k:<{width}}  {json.dumps(v) if isinstance(v, (dict, list)) else v}"
                         for k, v in result.items())
    return "" if result is None else str(result)


def run(args: argparse.Namespace) -> int:
    procedure = COMMANDS.get((args.group, args.action))
    if procedure is None:
        actions = sorted(a for g, a in COMMANDS if g == args.group)
        print(f"courtyard admin {args.group}: no action {args.action!r} (one of {', '.join(actions)})", file=sys.stderr)
        return 2
    try:
        pos, kw = _call_args(args)
    except ValueError as e:
        print(f"courtyard admin: --definition is not JSON: {e}", file=sys.stderr)
        return 2
    outcome: dict[str, Any] = {}

    from autobahn.twisted.wamp import ApplicationSession
    from autobahn.twisted.websocket import WampWebSocketClientFactory
    from autobahn.wamp.types import ComponentConfig
    from twisted.internet import reactor

    class AdminCall(ApplicationSession):
        def onConnect(self) -> None:
            self.join(self.config.realm, authmethods=["ticket"], authid=args.authid)

        def onChallenge(self, challenge) -> str:
            return args.ticket or ""

        async def onJoin(self, details) -> None:
            try:
                outcome["result"] = await self.call(procedure, *pos, **kw)
            except Exception as e:
                outcome["error"] = f"{getattr(e, 'error', type(e).__name__)}: {' '.join(map(str, e.args))}"
            self.leave()

        def onLeave(self, details) -> None:
            if "result" not in outcome and "error" not in outcome:
                outcome["error"] = f"{details.reason}: {details.message or ''}"
            self.disconnect()

        def onDisconnect(self) -> None:
            if reactor.running:
                reactor.stop()

    class Factory(WampWebSocketClientFactory):
        def clientConnectionFailed(self, connector, reason) -> None:
            outcome["error"] = f"cannot connect to {args.url}: {reason.getErrorMessage()}"
            reactor.stop()

    factory = Factory(lambda: AdminCall(ComponentConfig(args.admin_realm)), url=args.url)
    host_port = args.url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    reactor.connectTCP(host, int(port), factory, timeout=10)
    reactor.callLater(30, lambda: (outcome.setdefault("error", "timed out"), reactor.stop()))
    reactor.run()
    if "error" in outcome:
        print(f"courtyard admin: {outcome['error']}", file=sys.stderr)
        return 1
    print(json.dumps(outcome.get("result"), indent=2) if args.json else render(outcome.get("result")))
    return 0
