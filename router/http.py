"""Plain HTTP beside WAMP on a WebSocket listener's port: `/health` for load balancers, `/metrics` for
Prometheus, the status page (`/`, `/status`) and its data (`/status.json`); 404 elsewhere.

Why not a twisted.web Site with Autobahn's WebSocketResource at the WAMP path: measured with
`scripts/bench --scenarios churn,memory`, that path cost ~25 % more CPU per session open+close and
~0.4 KiB more per idle session (an HTTPChannel and Request parsed, then the request rebuilt and parsed
again by Autobahn), and needed its own header limits. The WebSocket protocol already holds the whole
opening request before Autobahn sees it (it enforces the 64 KiB cap), so a request that is not a
WebSocket upgrade is answered here and an upgrade goes to Autobahn unchanged: one `startswith` on the
WAMP path's hot path. No answer names the software or its version (no `Server:` header).

`/metrics` and the status page tell a stranger the realms, procedures and who was refused: they answer
only clients in `http.allow` or with `Authorization: Bearer <http.token>` (else 403). `/health` answers
everyone. A disabled endpoint is 404, as if it did not exist.

The status page is cluster-wide: `/status.json` lists every live node (each answers for itself over the
cluster's bus), `?node=<id>` is that node's own status; `/sessions.json` lists sessions of every node,
paged and filtered (realm, authid, authrole), `/session.json?id=N` is one; `POST /sessions/kill?id=N`
says GOODBYE (`wamp.close.killed`) to one, and only with the bearer token, even from an allowed network:
reading is for operators' networks, acting is for whoever holds the token. Answers that need Redis or
another node come later (a Deferred); the page polls, so a slow answer costs one poll, not a stream.
"""

from __future__ import annotations

import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from router import __version__, metrics, wamp
from router.transport.forwarded import ip_address

if TYPE_CHECKING:
    from router.edges import HttpNode

log = Logger()
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}
STATUS = "status"  # a bus request to another node: {"full": bool}: its status (full) or its summary
MAX_PER_PAGE = 200  # sessions in one /sessions.json page
NODE_WAIT = 2.0  # seconds another node has to answer for the status page
_KEPT = (b"authorization", b"x-forwarded-for")  # the only headers read
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format 0.0.4
STATUS_PAGE = files("router").joinpath("status.html").read_bytes()  # self-contained: no CDN, no build


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)  # only _KEPT, lower-case names
    query: dict[str, str] = field(default_factory=dict)  # the first value of each parameter


_TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def plain_request(head: bytes) -> Request | None:
    """A well-formed HTTP/1.x request that asks no WebSocket upgrade; None for any other (an upgrade, or
    a malformed line: Autobahn answers those as before). `head` is at most 64 KiB (the handshake cap)."""
    line, _, headers = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return None
    method, target = parts[0], parts[1]
    if not method or len(method) > 16 or not _TOKEN.issuperset(method):
        return None
    kept = {}
    for line in headers.split(b"\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"upgrade":
            return None
        if name in _KEPT:
            kept[name.decode()] = value.strip().decode("latin-1")
    path, _, query = target.decode("latin-1").partition("?")
    params = {k: v[0] for k, v in urllib.parse.parse_qs(query, max_num_fields=20).items()} if query else {}
    return Request(method.decode("ascii"), path, kept, params)


def response(status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
             head_only: bool = False, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response that closes the connection; no Server header."""
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("ascii") + (b"" if head_only else body)


def health(node: HttpNode) -> tuple[int, dict]:
    """200 while the node accepts sessions (and, in a cluster, reaches Redis); 503 once it is shutting
    down, or while a cluster node cannot reach Redis: it still serves its own sessions, but its clients
    cannot reach the rest of the cluster, so new ones are better sent to a node that can."""
    name = node.config.cluster.node_id if node.config.cluster is not None else node.config.name  # which node
    if node.stopping:
        return 503, {"status": "stopping", "node": name}
    body = {"status": "ok", "node": name, "sessions": node.table.size()}
    up = node.redis_reachable()
    if up is not None:
        body["redis"] = "ok" if up else "unreachable"
        if not up:
            body["status"] = "degraded"
            return 503, body
    return 200, body


def has_token(node: HttpNode, request: Request) -> bool:
    """`Authorization: Bearer <http.token>` (never, when no token is configured)."""
    conf = node.config.http
    token = request.headers.get("authorization", "")
    return conf.token is not None and token[:7].lower() == "bearer " and \
        hmac.compare_digest(token[7:].strip().encode(), conf.token.encode())


def allowed(node: HttpNode, request: Request, client: str | None) -> bool:
    """From a network in `http.allow` (a unix-socket client, `client` None, counts as local), or with
    the bearer token."""
    conf = node.config.http
    if has_token(node, request):
        return True
    ip = ip_address(client if client is not None else "127.0.0.1")
    return ip is not None and any(ip in net for net in conf.networks)


def answer(node: HttpNode, request: Request, client: str | None = None) -> Any:
    """The status and full response for a plain HTTP request to a WebSocket listener, or a Deferred of
    them (what needs Redis or another node); `client` is the peer's address (or the forwarded one from a
    trusted proxy), None on a unix socket."""
    method, path = request.method, request.path
    head_only = method == "HEAD"  # a HEAD answer has the headers of the GET one, and no body
    conf = node.config.http
    kind = _ROUTES.get(path)
    if kind is None or not getattr(conf, kind):
        return 404, response(404, b"not found\n", head_only=head_only)
    if path == "/sessions/kill":
        return _kill(node, request, client)
    if method not in ("GET", "HEAD"):
        return 405, response(405, b"method not allowed\n", extra="Allow: GET, HEAD\r\n")
    if kind == "health":
        status, body = health(node)
        return status, response(status, json.dumps(body).encode() + b"\n", "application/json", head_only=head_only)
    if not allowed(node, request, client):
        return 403, response(403, b"forbidden: not from an allowed network (http.allow), and no valid bearer "
                                  b"token\n", head_only=head_only)
    if kind == "metrics":
        return 200, response(200, node.metrics(), METRICS_TYPE, head_only=head_only)
    if path in _JSON:
        return _json(lambda: _JSON[path](node, request.query), head_only)
    return 200, response(200, STATUS_PAGE, "text/html; charset=utf-8", head_only=head_only,
                         extra="X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n"
                               "Content-Security-Policy: default-src 'self'; style-src 'unsafe-inline'; "
                               "script-src 'unsafe-inline'\r\n")


_ROUTES = {"/health": "health", "/metrics": "metrics", "/": "status", "/status": "status", "/status.json": "status",
           "/sessions.json": "status", "/session.json": "status", "/sessions/kill": "status"}


class BadRequest(Exception):
    """A status page query with a bad parameter: 400 with this text."""


def _json(result: Any, head_only: bool = False) -> Any:
    """200 with what `result()` gives as JSON (a value or a Deferred of one); 400 for BadRequest, 503
    if it failed. A (status, response) now when it is known now, else a Deferred of them."""
    def done(value: Any) -> tuple[int, bytes]:
        return 200, response(200, json.dumps(value, separators=(",", ":"), default=str).encode(),
                             "application/json", head_only=head_only)

    def failed(failure: Any) -> tuple[int, bytes]:
        if failure.check(BadRequest):
            return 400, response(400, f"{failure.value}\n".encode(), head_only=head_only)
        if getattr(failure.value, "uri", None) == "courtyard.error.cluster_unavailable":  # said by /health already
            return 503, response(503, b"the cluster's Redis is unreachable\n", head_only=head_only)
        log.warn("status page query failed: {e}", e=failure.getErrorMessage())
        return 503, response(503, b"not available now (see the log)\n", head_only=head_only)

    out = defer.maybeDeferred(result).addCallbacks(done, failed)
    now: list = []
    out.addCallback(now.append)
    return now[0] if now else out.addCallback(lambda _: now[0])


def _int(query: dict, name: str, default: int | None = None, low: int = 1, high: int = wamp.MAX_ID) -> int:
    text = query.get(name)
    if text is None:
        if default is None:
            raise BadRequest(f"{name} is required")
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(text)


def summary(node: HttpNode) -> dict:
    """What the status page's node table shows of one node (each node answers for itself)."""
    status, body = health(node)
    return {"id": _node_id(node), "name": node.config.name,
            "version": __version__, "uptime": round(time.time() - node.stats.started, 1),
            "sessions": node.table.size(), "connections": node.connections, "health": body["status"],
            "redis": body.get("redis"), "messages": {
                "received": sum(node.stats.msgs_in),
                "sent": sum(node.stats.msgs_out) + sum(r.events_delivered for r in node.realm_routers().values())}}


def node_status(node: HttpNode, body: Any) -> dict:
    """The bus request STATUS, answered for this node: its full status or its summary."""
    return metrics.status(node) if type(body) is dict and body.get("full") else summary(node)


def _status(node: HttpNode, query: dict) -> Any:
    """This node's status with every node's summary, or (`node=<id>`) another node's full status."""
    me = summary(node)["id"]
    wanted = query.get("node", me)
    if wanted != me:
        asked = node.ask_node(wanted, STATUS, {"full": True}, NODE_WAIT) if len(wanted) <= 100 else None
        if asked is None:
            raise BadRequest(f"no node {wamp.quote(wanted)}")

        def silent(failure: Any) -> Any:
            failure.trap(Exception)
            raise BadRequest(f"node {wamp.quote(wanted)} did not answer")

        return asked.addCallbacks(lambda s: {**s, "nodes": None}, silent)
    own = metrics.status(node)
    if node.config.cluster is None:
        return {**own, "nodes": [summary(node)]}

    def ask(found: list[dict]) -> Any:
        ids = sorted({str(n.get("id")) for n in found} | {me})[:100]
        asks = [defer.succeed(summary(node)) if i == me else
                node.ask_node(i, STATUS, {"full": False}, NODE_WAIT).addErrback(
                    lambda f, i=i: {"id": i, "health": "no answer"}) for i in ids]
        return defer.gatherResults(asks).addCallback(lambda nodes: {**own, "nodes": nodes})

    return node.nodes().addCallbacks(ask, lambda f: {**own, "nodes": [summary(node)]})


def _sessions(node: HttpNode, query: dict) -> Any:
    """Sessions of every node (this one's only, without a cluster), filtered and paged."""
    page, per_page = _int(query, "page", 1, 1, 10_000), _int(query, "per_page", 50, 1, MAX_PER_PAGE)
    realm, authid, authrole = (query.get(k) or None for k in ("realm", "authid", "authrole"))
    table = node.table

    def paged(found: list[dict]) -> dict:
        found = sorted(found, key=lambda d: (d.get("realm", ""), d["session"]))
        start = (page - 1) * per_page
        return {"total": len(found), "page": page, "per_page": per_page, "sessions": found[start:start + per_page]}

    def local() -> list[dict]:
        me = _node_id(node)
        return [_local(me, s) for s in table.list(realm, authid=authid, authrole=authrole)]

    if table.clustered:  # without Redis: this node's own, said so
        return table.cluster_list(realm, authid=authid, authrole=authrole).addCallbacks(
            paged, lambda f: {**paged(local()), "partial": f.getErrorMessage()})
    return paged(local())


def _node_id(node: HttpNode) -> str:
    cluster = node.config.cluster
    return cluster.node_id if cluster else node.config.name


def _local(node_id: str, session: Any) -> dict:
    d = session.to_details_map()
    d.setdefault("realm", session.realm_uri)
    d.setdefault("node", node_id)
    return d


def _session(node: HttpNode, query: dict) -> Any:
    sid = _int(query, "id")
    session = node.table.lookup(sid)
    if session is not None:
        return {**_local(_node_id(node), session), "messages": {"received": session.msgs_in, "sent": session.msgs_out}}
    if not node.table.clustered:
        raise BadRequest(f"no session {sid}")

    def found(d: dict | None) -> dict:
        if d is None:
            raise BadRequest(f"no session {sid}")
        return d

    return node.table.cluster_details(sid).addCallback(found)


def _kill(node: HttpNode, request: Request, client: str | None) -> Any:
    """POST /sessions/kill?id=N, with the bearer token only: GOODBYE wamp.close.killed, on any node."""
    if request.method != "POST":
        return 405, response(405, b"method not allowed\n", extra="Allow: POST\r\n")
    if not has_token(node, request):
        return 403, response(403, b"forbidden: killing a session takes the bearer token (http.token)\n")
    try:
        sid = _int(request.query, "id")
    except BadRequest as e:
        return 400, response(400, f"{e}\n".encode())
    log.info("session {sid} killed through the status page from {client}", sid=sid, client=client or "local")
    table = node.table
    if table.lookup(sid) is not None or not table.clustered:
        killed = table.kill(sid, wamp.KILLED, "killed by an operator (status page)")
        return _json(lambda: {"killed": int(bool(killed))})
    return _json(lambda: table.cluster_details(sid).addCallback(
        lambda d: table.cluster_kill([d], wamp.KILLED, "killed by an operator (status page)") if d else 0
    ).addCallback(lambda n: {"killed": n}))


_JSON = {"/status.json": _status, "/sessions.json": _sessions, "/session.json": _session}
