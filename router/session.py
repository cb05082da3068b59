"""The session record (after Bondy's `bondy_session`), and the rate and quota windows it carries.

A Session is created by `tuplespace.SessionTable.open` once HELLO is accepted and lives exactly as long
as its connection. Records use __slots__: a router holds tens of thousands of them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol

from router.wamp import MAX_ID

# The states of a session's connection, HELLO to the end (router.protocol drives them; an in-router
# session is ESTABLISHED from the start).
ESTABLISHING, AUTHENTICATING, ESTABLISHED, CLOSING, CLOSED = range(5)


class Peer(Protocol):
    """What a session's messages are sent to (Bondy's `pid`): a socket's WampProtocol, an in-router
    ServiceSession, a cluster stand-in that relays to another node, a departed session. The broker and
    the dealer send to it without knowing which. A send returns None when the message went (or the peer
    is going anyway), else why not (wamp.PAYLOAD_SIZE_EXCEEDED, or the transport's slow-consumer mark)."""

    @property
    def codec(self) -> Any: ...  # what a prepared EVENT frame is made with (router.protocol.Codec); None in-router

    def send(self, msg: list, bulk: bool = ...) -> str | None: ...

    def send_prepared(self, frame: Any) -> str | None: ...

    def close(self, reason: str = ..., message: str | None = ...) -> None: ...



class RateWindow:
    """At most `limit` inbound requests per `duration` seconds (a fixed window, O(1) per message)."""

    __slots__ = ("limit", "duration", "_start", "_count")

    def __init__(self, limit: int, duration: float) -> None:
        self.limit = limit
        self.duration = duration
        self._start = 0.0
        self._count = 0

    def hit(self, now: float) -> float:
        """Count one request. Returns 0 when allowed, else seconds until the window opens again."""
        if now - self._start >= self.duration:
            self._start = now
            self._count = 0
        if self._count >= self.limit:
            return self._start + self.duration - now
        self._count += 1
        return 0.0

    def to_map(self, now: float) -> dict:
        used = self._count if now - self._start < self.duration else 0
        return {"limit": self.limit, "duration": self.duration, "remaining": self.limit - used}


class QuotaWindow:
    """A budget of `limit` requests renewed every `duration` seconds; `renews` is when, `remaining` what is left."""

    __slots__ = ("limit", "duration", "renews", "remaining")

    def __init__(self, limit: int, duration: float, now: float | None = None) -> None:
        self.limit = limit
        self.duration = duration
        self.renews = (time.time() if now is None else now) + duration
        self.remaining = limit

    def spend(self, now: float) -> float:
        """Spend one request. Returns 0 when allowed, else seconds until renewal."""
        if now >= self.renews:
            periods = int((now - self.renews) // self.duration) + 1
            self.renews += periods * self.duration
            self.remaining = self.limit
        if self.remaining <= 0:
            return self.renews - now
        self.remaining -= 1
        return 0.0

    def to_map(self, now: float) -> dict:
        remaining = self.limit if now >= self.renews else self.remaining
        return {"limit": self.limit, "duration": self.duration, "remaining": remaining,
                "renews": _iso(self.renews)}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class Session:
    """One WAMP session: who, where, and the state the router keeps for it."""

    __slots__ = (
        "id", "realm_uri", "transport", "peer", "agent", "roles", "seq",
        "authid", "authrole", "authmethod", "authprovider", "authextra",
        "created", "expires_in", "rate", "quota",
        "msgs_in", "msgs_out", "last_active", "realm", "data", "authorizer",
    )

    def __init__(self, id: int, realm_uri: str, transport: Peer, peer: tuple[str, int] | None,
                 agent: str | None, roles: dict, authid: str, authrole: str, authmethod: str,
                 authprovider: str, authextra: dict | None = None, expires_in: float | None = None,
                 rate: RateWindow | None = None, quota: QuotaWindow | None = None,
                 realm: Any = None) -> None:
        self.id = id
        self.realm_uri = realm_uri
        self.transport: Peer = transport  # the connection that owns this session (Bondy's pid)
        self.peer = peer
        self.agent = agent
        self.roles = roles
        self.seq = 0
        self.authid = authid
        self.authrole = authrole
        self.authmethod = authmethod
        self.authprovider = authprovider
        self.authextra = authextra
        self.created = time.time()
        self.expires_in = expires_in
        self.rate = rate
        self.quota = quota
        self.msgs_in = 0
        self.msgs_out = 0
        self.last_active = self.created
        self.realm = realm  # the running realm (broker, dealer) this session is bound to
        self.data = None  # operator-set attributes (admin API), created on first use
        self.authorizer = None  # the role's permissions (realms.authorization.Role); None: all allowed

    def next_seq(self) -> int:
        """Router-issued session-scope id: starts at 1 and wraps to 1, never 0 (WAMP spec, IDs)."""
        seq = self.seq + 1
        if seq > MAX_ID:
            seq = 1
        self.seq = seq
        return seq

    def announces(self, role: str, feature: str) -> bool:
        """Whether the peer's HELLO announced `feature` for one of its roles (client data: checked, not trusted)."""
        announced = self.roles.get(role) if type(self.roles) is dict else None
        features = announced.get("features") if type(announced) is dict else None
        return type(features) is dict and features.get(feature) is True

    def idle(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.last_active

    def expired(self, now: float) -> bool:
        return self.expires_in is not None and now - self.created >= self.expires_in

    def to_details_map(self) -> dict:
        """The public view, as in WELCOME details and the meta API (`wamp.session.get`)."""
        now = time.time()
        peer = self.peer
        details = {
            "session": self.id,
            "realm": self.realm_uri,
            "authid": self.authid,
            "authrole": self.authrole,
            "authmethod": self.authmethod,
            "authprovider": self.authprovider,
            "authextra": self.authextra or {},
            "transport": {"peername": f"tcp4:{peer[0]}:{peer[1]}" if peer else None},
            "agent": self.agent,
            "roles": sorted(self.roles),
            "created": _iso(self.created),
            "expires_in": self.expires_in,
            "idle": round(now - self.last_active, 3),
            "counters": {"messages_in": self.msgs_in, "messages_out": self.msgs_out},
        }
        if self.rate is not None:
            details["rate"] = self.rate.to_map(now)
        if self.quota is not None:
            details["quota"] = self.quota.to_map(now)
        if self.data:
            details["data"] = dict(self.data)
        return details
