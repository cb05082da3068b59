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
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING

from router import metrics
from router.transport.forwarded import ip_address

if TYPE_CHECKING:
    from router.edges import HttpNode

_REASONS = {200: "OK", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_KEPT = (b"authorization", b"x-forwarded-for")  # the only headers read
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format 0.0.4
STATUS_PAGE = files("router").joinpath("status.html").read_bytes()  # self-contained: no CDN, no build


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)  # only _KEPT, lower-case names


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
    path = target.split(b"?", 1)[0].decode("latin-1")
    return Request(method.decode("ascii"), path, kept)


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


def allowed(node: HttpNode, request: Request, client: str | None) -> bool:
    """From a network in `http.allow` (a unix-socket client, `client` None, counts as local), or with
    the bearer token."""
    conf = node.config.http
    token = request.headers.get("authorization", "")
    if conf.token is not None and token[:7].lower() == "bearer " and \
            hmac.compare_digest(token[7:].strip().encode(), conf.token.encode()):
        return True
    ip = ip_address(client if client is not None else "127.0.0.1")
    return ip is not None and any(ip in net for net in conf.networks)


def answer(node: HttpNode, request: Request, client: str | None = None) -> tuple[int, bytes]:
    """The status and full response for a plain HTTP request to a WebSocket listener; `client` is the
    peer's address (or the forwarded one from a trusted proxy), None on a unix socket."""
    method, path = request.method, request.path
    head_only = method == "HEAD"  # a HEAD answer has the headers of the GET one, and no body
    conf = node.config.http
    kind = _ROUTES.get(path)
    if kind is None or not getattr(conf, kind):
        return 404, response(404, b"not found\n", head_only=head_only)
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
    if path == "/status.json":
        body = json.dumps(metrics.status(node), separators=(",", ":")).encode()
        return 200, response(200, body, "application/json", head_only=head_only)
    return 200, response(200, STATUS_PAGE, "text/html; charset=utf-8", head_only=head_only,
                         extra="X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n"
                               "Content-Security-Policy: default-src 'self'; style-src 'unsafe-inline'; "
                               "script-src 'unsafe-inline'\r\n")


_ROUTES = {"/health": "health", "/metrics": "metrics", "/": "status", "/status": "status", "/status.json": "status"}
