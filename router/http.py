"""Plain HTTP beside WAMP on a WebSocket listener's port: `/health` for load balancers, 404 elsewhere.

Why not a twisted.web Site with Autobahn's WebSocketResource at the WAMP path: measured with
`scripts/bench --scenarios churn,memory`, that path cost ~25 % more CPU per session open+close and
~0.4 KiB more per idle session (an HTTPChannel and Request parsed, then the request rebuilt and parsed
again by Autobahn), and needed its own header limits. The WebSocket protocol already holds the whole
opening request before Autobahn sees it (it enforces the 64 KiB cap), so a request that is not a
WebSocket upgrade is answered here and an upgrade goes to Autobahn unchanged: one `startswith` on the
WAMP path's hot path. No answer names the software or its version (no `Server:` header).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.node import Node

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def plain_request(head: bytes) -> tuple[str, str] | None:
    """(method, path) of a well-formed HTTP/1.x request that asks no WebSocket upgrade; None for any
    other (an upgrade, or a malformed line: Autobahn answers those as before)."""
    line, _, headers = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return None
    method, target = parts[0], parts[1]
    if not method or len(method) > 16 or not _TOKEN.issuperset(method):
        return None
    if any(h.partition(b":")[0].strip().lower() == b"upgrade" for h in headers.split(b"\n")):
        return None
    path = target.split(b"?", 1)[0].decode("latin-1")
    return method.decode("ascii"), path


def response(status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
             head_only: bool = False, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response that closes the connection; no Server header."""
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("ascii") + (b"" if head_only else body)


def health(node: Node) -> tuple[int, dict]:
    """200 while the node accepts sessions, 503 once it is shutting down."""
    if node.stopping:
        return 503, {"status": "stopping", "node": node.config.name}
    return 200, {"status": "ok", "node": node.config.name, "sessions": node.table.size()}


def answer(node: Node, method: str, path: str) -> tuple[int, bytes]:
    """The status and full response for a plain HTTP request to a WebSocket listener."""
    head_only = method == "HEAD"  # a HEAD answer has the headers of the GET one, and no body
    if path != "/health":
        return 404, response(404, b"not found\n", head_only=head_only)
    if method not in ("GET", "HEAD"):
        return 405, response(405, b"method not allowed\n", extra="Allow: GET, HEAD\r\n")
    status, body = health(node)
    return status, response(status, json.dumps(body).encode() + b"\n", "application/json", head_only=head_only)
