"""`courtyard admin GROUP ACTION ...`: call the admin realm's procedures over WAMP and say what
happened, in words for people or JSON (`--json`) for scripts. One sub-command per procedure, each with
its own `--help` and required arguments, so a mistake is caught here: bad arguments or JSON → one line
on stderr and exit 2; a WAMP error or no connection → one line and exit 1; never a traceback.

Login: ticket (`--ticket` / COURTYARD_ADMIN_TICKET) or cryptosign (`--key`, the Ed25519 private key in
hex / COURTYARD_ADMIN_KEY), as authid `--authid` (COURTYARD_ADMIN_AUTHID, default `admin`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "ws://127.0.0.1:8080/ws"
DEFAULT_AUTHID = "admin"


@dataclass(frozen=True)
class Action:
    procedure: str
    help: str
    positional: tuple[tuple[str, Callable, str], ...] = ()  # (name, type, help), passed in order
    say: Callable[[Any, argparse.Namespace], str] | None = None  # the human answer; None: a table
    expand: str | None = None  # for people: each id of the answer shown by this procedure, as a table row


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _json_object(text: str) -> dict:
    """A JSON object from the command line; argparse turns the ValueError into a one-line error."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}, got {type(value).__name__}")
    return value


_json_object.__name__ = "JSON object"  # what argparse names in its errors


def _json_value(text: str) -> Any:
    """Any JSON value (a process request: `{"op": "list"}`, `"ping"`, `3`)."""
    try:
        return json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None


_json_value.__name__ = "JSON value"
REALM = ("realm", str, "the realm URI")
AUTHID = ("authid", str, "the user's authid")
SESSION = ("session", int, "the session id")
KILLED = "killed"

ACTIONS: dict[str, dict[str, Action]] = {
    "realms": {
        "list": Action("courtyard.realm.list", "list the realms"),
        "get": Action("courtyard.realm.get", "show a realm's definition, users and session count", (REALM,)),
        "create": Action("courtyard.realm.create", "create a realm (--definition: auth, roles, limits; naming an "
                         "auth method other than anonymous turns anonymous off unless it is given)", (REALM,),
                         lambda r, a: f"realm {a.realm} created"),
        "update": Action("courtyard.realm.update", "replace top-level keys (auth, roles, limits) of a realm",
                         (REALM,), lambda r, a: f"realm {a.realm} updated"),
        "delete": Action("courtyard.realm.delete", "delete a realm, closing its sessions", (REALM,),
                         lambda r, a: f"realm {a.realm} deleted ({KILLED} {_plural(r, 'session')})"),
    },
    "sessions": {
        "count": Action("courtyard.session.count", "count sessions (--realm: in one realm)"),
        "list": Action("courtyard.session.list", "list sessions as a table: id, authid, authrole, authmethod, "
                       "peer, agent, idle, node (--json: the ids; filters: --realm, --authid-filter, --authrole, "
                       "--dt)", expand="courtyard.session.get"),
        "get": Action("courtyard.session.get", "show one session's details", (SESSION,)),
        "kill": Action("courtyard.session.kill", "close one session with GOODBYE", (SESSION,),
                       lambda r, a: f"{KILLED} 1 session"),
        "kill-by-authid": Action("courtyard.session.kill_by_authid", "close every session of one authid in a realm",
                                 (REALM, AUTHID), lambda r, a: f"{KILLED} {_plural(r, 'session')}"),
        "kill-all": Action("courtyard.session.kill_all", "close every session of a realm", (REALM,),
                           lambda r, a: f"{KILLED} {_plural(r, 'session')}"),
        "activity": Action("courtyard.session.activity", "count sessions of a realm active in the last DT seconds",
                           (REALM, ("dt", float, "seconds")),
                           lambda r, a: f"{_plural(r, 'session')} active in the last {a.dt:g} s"),
        "wipe": Action("courtyard.session.wipe", "close sessions past their expiry or idle timeout now",
                       say=lambda r, a: f"wiped {_plural(r, 'expired session')}"),
        "set-data": Action("courtyard.session.set_data", "merge attributes into a session's data (null deletes)",
                           (SESSION, ("data", _json_object, 'a JSON object, e.g. \'{"tier": "gold"}\'')),
                           lambda r, a: f"session {a.session} data: {json.dumps(r)}"),
    },
    "users": {
        "list": Action("courtyard.user.list", "list a realm's users", (REALM,)),
        "get": Action("courtyard.user.get", "show a user (never its secrets)", (REALM, AUTHID)),
        "add": Action("courtyard.user.add", "add a user to a realm", (REALM, AUTHID),
                      lambda r, a: f"user {a.authid} added to realm {a.realm} (role {r['role']}, "
                                   f"{', '.join(r['authmethods']) or 'no methods'})"),
        "update": Action("courtyard.user.update", "change a user's role or credentials", (REALM, AUTHID),
                         lambda r, a: f"user {a.authid} of realm {a.realm} updated (role {r['role']}, "
                                      f"{', '.join(r['authmethods']) or 'no methods'})"),
        "remove": Action("courtyard.user.remove", "remove a user, closing its sessions", (REALM, AUTHID),
                         lambda r, a: f"user {a.authid} removed from realm {a.realm} "
                                      f"({KILLED} {_plural(r, 'session')})"),
    },
    "processes": {
        "list": Action("courtyard.process.list", "list session processes (--realm: in one realm)"),
        "start": Action("courtyard.process.start", "start a session's process (--arg: JSON for its init)",
                        (SESSION,), lambda r, a: f"process of session {a.session} "
                                                 f"{'started' if r else 'was running already'}"),
        "started": Action("courtyard.process.started", "say whether a session has a process", (SESSION,),
                          lambda r, a: f"session {a.session} {'has a process' if r else 'has no process'}"),
        "call": Action("courtyard.process.call", "call a session's process and print its answer",
                       (SESSION, ("request", _json_value, 'the request as JSON, e.g. \'{"op": "list"}\''))),
        "cast": Action("courtyard.process.cast", "send a request to a session's process, not waiting for it",
                       (SESSION, ("request", _json_value, "the request as JSON")),
                       lambda r, a: f"sent to the process of session {a.session}"),
        "terminate": Action("courtyard.process.terminate", "end a session's process (the session stays)",
                            (SESSION,), lambda r, a: f"process of session {a.session} "
                                                     f"{'terminated' if r else 'was not running'}"),
    },
    "nodes": {
        "list": Action("courtyard.node.list", "list the cluster's nodes: id, address, sessions, started, "
                                              "last heartbeat"),
    },
}


def _options(p: argparse.ArgumentParser, group: str, action: str) -> None:
    """The keyword arguments each procedure takes, as options (dest = the procedure's keyword)."""
    if (group, action) in (("realms", "create"), ("realms", "update")):
        key = "changes" if action == "update" else "definition"
        p.add_argument("--definition", dest=key, type=_json_object, required=action == "update",
                       help="the realm definition as a JSON object" if action == "create"
                       else "the keys to replace, as a JSON object")
    if (group == "sessions" and action in ("count", "list")) or (group, action) == ("processes", "list"):
        p.add_argument("--realm", dest="kw_realm", help="only this realm")
    if (group, action) == ("sessions", "list"):
        p.add_argument("--authid-filter", dest="kw_authid", metavar="AUTHID", help="only this authid")
        p.add_argument("--authrole", dest="kw_authrole", help="only this authrole")
        p.add_argument("--dt", dest="kw_dt", type=float, help="only sessions active in the last DT seconds")
    if (group, action) == ("processes", "start"):
        p.add_argument("--arg", dest="kw_arg", type=_json_value, help="the init argument, as JSON")
    if (group, action) == ("processes", "call"):
        p.add_argument("--call-timeout", dest="kw_timeout", type=float, metavar="SECONDS",
                       help="seconds the process has to answer (default: its call_timeout)")
    if group == "sessions" and action.startswith("kill"):
        p.add_argument("--reason", help="the GOODBYE reason URI (default wamp.close.killed)")
        p.add_argument("--message", help="the GOODBYE message")
    if group == "users" and action in ("add", "update"):
        p.add_argument("--role", required=action == "add", help="the user's role")
        p.add_argument("--secret", dest="ticket", help="a ticket (the router keeps a salted hash of it)")
        p.add_argument("--wampcra", help="a WAMP-CRA secret (the router keeps a salted key)")
        p.add_argument("--cryptosign", action="append", metavar="PUBKEY",
                       help="an Ed25519 public key, 64 hex characters (repeat for more)")


_KEYWORDS = ("definition", "changes", "reason", "message", "role", "ticket", "wampcra", "cryptosign")


def _connection_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """How to reach and log in to the admin realm: accepted before the group or after the action."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--url", default=default(os.environ.get("COURTYARD_URL", DEFAULT_URL)),
                   help=f"the router's WebSocket URL (or COURTYARD_URL; default {DEFAULT_URL})")
    p.add_argument("--admin-realm", default=default("courtyard.admin"), help="the admin realm (admin.realm)")
    p.add_argument("--authid", dest="login_authid", metavar="AUTHID",
                   default=default(os.environ.get("COURTYARD_ADMIN_AUTHID", DEFAULT_AUTHID)),
                   help=f"who logs in: an admin.users authid (or COURTYARD_ADMIN_AUTHID; default {DEFAULT_AUTHID})")
    p.add_argument("--ticket", dest="login_ticket", metavar="TICKET",
                   default=default(os.environ.get("COURTYARD_ADMIN_TICKET")),
                   help="log in by ticket (or COURTYARD_ADMIN_TICKET)")
    p.add_argument("--key", default=default(os.environ.get("COURTYARD_ADMIN_KEY")),
                   help="log in by cryptosign: the Ed25519 private key, 64 hex characters (or COURTYARD_ADMIN_KEY)")
    p.add_argument("--json", action="store_true", default=default(False), help="print the result as JSON")
    p.add_argument("--timeout", type=float, default=default(30.0), help="seconds to wait for the answer")
    p.add_argument("--cafile", default=default(None),
                   help="wss:// URLs: PEM file of the CA that signed the router's certificate "
                        "(default: the system's trusted CAs)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    admin = sub.add_parser("admin", help="manage a running router through its admin realm",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_options(admin, defaults=True)
    groups = admin.add_subparsers(dest="group", required=True, metavar="GROUP")
    for group, actions in ACTIONS.items():
        g = groups.add_parser(group, help=f"{group}: {', '.join(actions)}")
        verbs = g.add_subparsers(dest="action", required=True, metavar="ACTION")
        for name, action in actions.items():
            p = verbs.add_parser(name, help=action.help, description=f"{action.help} ({action.procedure})")
            for arg, kind, text in action.positional:
                p.add_argument(arg, type=kind, help=text)
            _options(p, group, name)
            _connection_options(p, defaults=False)
            p.set_defaults(func=run, spec=action)


def call_arguments(args: argparse.Namespace) -> tuple[list, dict]:
    """The procedure's positional and keyword arguments from the parsed command line."""
    pos = [getattr(args, name) for name, _, _ in args.spec.positional]
    kw = {k: getattr(args, k) for k in _KEYWORDS if getattr(args, k, None) is not None}
    kw.update({k[3:]: v for k, v in vars(args).items() if k.startswith("kw_") and v is not None})
    return pos, kw


MAX_EXPANDED = 1000  # rows fetched one by one for a table (sessions list); more: the ids
SESSION_COLUMNS = ("id", "authid", "authrole", "authmethod", "peer", "agent", "idle", "node")


def _cell(value: Any) -> str:
    """A table cell or value: nothing known is '-', never Python's None."""
    if value is None or value == "":
        return "-"
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return ",".join(value) or "-"  # a node's shards: one word, for the eye and for `awk`
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def session_row(details: dict) -> dict:
    """A session's details (courtyard.session.get) as a table row."""
    peer = (details.get("transport") or {}).get("peername")
    if isinstance(peer, str) and peer.startswith(("tcp4:", "tcp6:")):
        peer = peer[5:]
    idle = details.get("idle")
    return {"id": details.get("session"), "authid": details.get("authid"), "authrole": details.get("authrole"),
            "authmethod": details.get("authmethod"), "peer": peer, "agent": details.get("agent"),
            "idle": f"{idle:.1f}s" if isinstance(idle, (int, float)) else idle, "node": details.get("node")}


def render(result: Any) -> str:
    """A readable table: a list of ids or names one a line, a list of mappings as columns, a mapping
    as key/value rows."""
    if isinstance(result, list) and result and all(isinstance(x, dict) for x in result):
        cols = list(dict.fromkeys(k for row in result for k in row))
        rows = [[_cell(row.get(c)) for c in cols] for row in result]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                         for line in [cols, *rows])
    if isinstance(result, list):
        return "\n".join(str(x) for x in result) if result else "(none)"
    if isinstance(result, dict):
        width = max((len(str(k)) for k in result), default=0)
        return "\n".join(f"{k:<{width}}  {_cell(v)}" for k, v in result.items())
    return "" if result is None else str(result)


class _NoRealm(Exception):
    error = "courtyard.error.no_such_realm"  # as the admin procedures that take a realm say it

    def __init__(self, realm: str) -> None:
        super().__init__(f"no realm {realm!r}")


def _fail(text: str, code: int) -> int:
    print(f"courtyard admin: {text}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from autobahn.websocket.util import parse_url

    try:
        secure, host, port, _, _, _ = parse_url(args.url)
    except Exception as e:  # Autobahn raises ValueError, and Exception for some shapes
        return _fail(f"bad --url {args.url!r}: {e}", 2)
    signer = None
    if args.key is not None:
        try:
            from nacl.signing import SigningKey

            signer = SigningKey(bytes.fromhex(args.key))
        except Exception:
            return _fail("--key must be an Ed25519 private key, 64 hex characters "
                         "(`courtyard auth keygen` prints one)", 2)
    elif args.login_ticket is None:
        return _fail("no credential: give --ticket (or COURTYARD_ADMIN_TICKET) or --key (or COURTYARD_ADMIN_KEY)", 2)
    try:
        tls = _tls_options(host, args.cafile) if secure else None
    except (ValueError, OSError) as e:
        return _fail(str(e), 2)
    pos, kw = call_arguments(args)
    outcome = _call(args, tls, host, port, signer, args.spec.procedure, pos, kw)
    if "error" in outcome:
        return _fail(outcome["error"], 1)
    result = outcome.get("result")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(args.spec.say(result, args) if args.spec.say else render(result))
    return 0


def _tls_options(host: str, cafile: str | None) -> Any:
    """TLS client options for a wss:// URL: the certificate is verified against `cafile`, or the
    system's trusted CAs, and the URL's host name."""
    from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust

    if cafile is None:
        return optionsForClientTLS(host, trustRoot=platformTrust())
    try:
        with open(cafile, "rb") as f:
            trust = Certificate.loadPEM(f.read())
    except OSError as e:
        raise OSError(f"--cafile {cafile}: {e.strerror}") from None
    except Exception:
        raise ValueError(f"--cafile {cafile}: not a PEM certificate") from None
    return optionsForClientTLS(host, trustRoot=trust)


def _why(error: BaseException) -> str:
    """One line for a lost connection; a TLS failure says which check failed."""
    from router.transport.tls import tls_error

    what = tls_error(error)
    if what is None:
        return str(error) or type(error).__name__
    hint = " (is --cafile the CA that signed the router's certificate, and the URL's host in it?)" \
        if "verify" in what else ""
    return f"TLS: {what}{hint}"


def _call(args: argparse.Namespace, tls: Any, host: str, port: int, signer: Any, procedure: str,
          pos: list, kw: dict) -> dict:
    """Join the admin realm, make one call, leave: {"result": ...} or {"error": one line}."""
    from autobahn.twisted.wamp import ApplicationSession
    from autobahn.twisted.websocket import WampWebSocketClientFactory, WampWebSocketClientProtocol
    from autobahn.wamp.types import ComponentConfig
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

    outcome: dict[str, Any] = {}

    stopping: list[bool] = []

    def done(key: str, value: Any) -> None:
        """The first outcome counts; the reactor is stopped once (connection lost, left, timed out)."""
        if "error" not in outcome and "result" not in outcome:
            outcome[key] = value
        if not stopping:
            stopping.append(True)
            reactor.stop()

    class AdminCall(ApplicationSession):
        def onConnect(self) -> None:
            if signer is not None:
                self.join(self.config.realm, authmethods=["cryptosign"], authid=args.login_authid,
                          authextra={"pubkey": signer.verify_key.encode().hex()})
            else:
                self.join(self.config.realm, authmethods=["ticket"], authid=args.login_authid)

        def onChallenge(self, challenge) -> str:
            if challenge.method == "cryptosign":
                return signer.sign(bytes.fromhex(challenge.extra["challenge"])).hex()
            return args.login_ticket or ""

        async def onJoin(self, details) -> None:
            try:
                result = await self.call(procedure, *pos, **kw)
                realm = kw.get("realm")
                if realm is not None and not result and realm not in await self.call("courtyard.realm.list"):
                    raise _NoRealm(realm)  # an empty answer about a realm that is not there says so
                expand = args.spec.expand
                if expand is not None and not args.json and isinstance(result, list) and \
                        len(result) <= MAX_EXPANDED:
                    result = await self._expanded(expand, result)
                outcome["result"] = result
            except Exception as e:
                text = " ".join(map(str, getattr(e, "args", ()))) or type(e).__name__
                outcome["error"] = f"{getattr(e, 'error', type(e).__name__)}: {text}"
            self.leave()

        async def _expanded(self, expand: str, ids: list) -> list:
            rows = []
            for sid in ids:
                try:
                    rows.append(session_row(await self.call(expand, sid)))
                except Exception:  # gone meanwhile
                    continue
            return rows or ids

        def onLeave(self, details) -> None:
            if "result" not in outcome and "error" not in outcome:
                outcome["error"] = f"{details.reason}: {details.message or ''}".rstrip(": ")
            self.disconnect()

        def onDisconnect(self) -> None:
            done("error", "the router closed the connection")

    class Protocol(WampWebSocketClientProtocol):
        def connectionLost(self, reason) -> None:  # before any answer: a refused TLS handshake, most often
            hint = ""
            if args.url.startswith("ws://") and getattr(self, "state", None) == self.STATE_CONNECTING and \
                    not getattr(self, "http_headers", None):
                hint = " (no HTTP answer to the WebSocket opening: is it a TLS listener? then use wss://)"
            done("error", f"connection to {args.url} lost: {_why(reason.value)}{hint}")
            super().connectionLost(reason)

    factory = WampWebSocketClientFactory(lambda: AdminCall(ComponentConfig(args.admin_realm)), url=args.url)
    factory.protocol = Protocol
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=10)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    endpoint.connect(factory).addErrback(
        lambda reason: done("error", f"cannot connect to {args.url}: {reason.getErrorMessage()}"))
    reactor.callLater(args.timeout, done, "error", f"no answer from {args.url} in {args.timeout:g} s")
    reactor.run()
    return outcome
