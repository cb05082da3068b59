"""Admission control against reconnect storms: connections are refused early and cheaply, before
any WAMP work, when one client address (or the node) opens too many or too fast, and a session is
refused after HELLO when its authid has too many.

- `limits.connections_per_second` (the node) and, per client address, `limits.max_connections_per_address`
  and `limits.connections_per_second_per_address`: checked when the connection opens (on a WebSocket
  listener with `trusted_proxies`, once the opening request names the client in X-Forwarded-For). A
  WebSocket gets HTTP 503 before the upgrade, a RawSocket the spec's handshake error 4 (maximum
  connection count reached); either closes at once.
- `limits.max_sessions_per_authid`: sessions of one authid in one realm on this node (anonymous ones
  not counted), ABORT `courtyard.error.too_many_sessions_per_authid` after HELLO.

Each refusal counts in /metrics (`courtyard_refusals{reason=…}`, realm ""); the log has at most one
line per reason every LOG_EVERY seconds, with how many were refused. Rates are token
buckets holding one second's worth; every table is bounded (MAX_ADDRESSES).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger

TOO_MANY_PER_AUTHID = "courtyard.error.too_many_sessions_per_authid"
LOG_EVERY = 10.0  # seconds between two log lines for one reason
MAX_ADDRESSES = 100_000  # addresses tracked for their rate; past that, the quiet ones are forgotten
PER_ADDRESS, ADDRESS_RATE, NODE_RATE = "max_connections_per_address", "connections_per_second_per_address", \
    "connections_per_second"


class _Bucket:
    __slots__ = ("tokens", "last")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.last = now

    def take(self, rate: int, now: float) -> bool:
        self.tokens = min(float(rate), self.tokens + (now - self.last) * rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Admission:
    log = Logger()

    def __init__(self, config: Any, stats: Any, clock: Any = time.monotonic) -> None:
        self.stats = stats
        self.clock = clock
        self.open: dict[str, int] = {}  # client address → connections admitted and still open
        self._rates: dict[str, _Bucket] = {}
        self._node: _Bucket | None = None
        self._refusing: dict[str, tuple[float, int]] = {}  # reason → (last logged, refused since)
        self.configure(config)

    def configure(self, config: Any) -> None:
        """The limits from a NodeConfig (at start and on reload)."""
        self.max_per_address = config.max_connections_per_address
        self.address_rate = config.connections_per_second_per_address
        self.node_rate = config.connections_per_second
        self.max_per_authid = config.max_sessions_per_authid
        if self.node_rate is not None and self._node is None:
            self._node = _Bucket(float(self.node_rate), self.clock())

    # -- connections ---------------------------------------------------------------------------------
    def connection(self) -> str | None:
        """A new connection, before its address is known: the node's rate. The reason if refused."""
        if self._node is not None and self.node_rate is not None and not self._node.take(self.node_rate, self.clock()):
            return self._refuse(NODE_RATE, "?")
        return None

    def address(self, address: str) -> str | None:
        """The connection's client address is `address`: its limits. None: admitted and counted in
        `open` (then `closed(address)` when it ends); else the reason it is refused."""
        if self.max_per_address is not None and self.open.get(address, 0) >= self.max_per_address:
            return self._refuse(PER_ADDRESS, address)
        if self.address_rate is not None:
            now = self.clock()
            bucket = self._rates.get(address)
            if bucket is None:
                if len(self._rates) >= MAX_ADDRESSES:
                    self._forget(now)
                bucket = self._rates[address] = _Bucket(float(self.address_rate), now)
            if not bucket.take(self.address_rate, now):
                return self._refuse(ADDRESS_RATE, address)
        self.open[address] = self.open.get(address, 0) + 1
        return None

    def closed(self, address: str) -> None:
        n = self.open.get(address, 0) - 1
        if n > 0:
            self.open[address] = n
        else:
            self.open.pop(address, None)

    def _forget(self, now: float) -> None:
        """Drop the buckets that have refilled (their address has been quiet a second or more); if all
        are busy, the oldest half: a flood of spoofed addresses cannot grow the table."""
        full = [a for a, b in self._rates.items() if now - b.last >= 1.0]
        for a in full or list(self._rates)[:len(self._rates) // 2]:
            del self._rates[a]

    # -- sessions --------------------------------------------------------------------------------------
    def session(self, table: Any, realm: str, authid: str, authmethod: str) -> str | None:
        """Before a session opens: the ABORT message if its authid has max_sessions_per_authid already."""
        if self.max_per_authid is None or authmethod == "anonymous":
            return None
        n = len(table.list(realm, authid=authid))
        if n >= self.max_per_authid:
            self._refuse("max_sessions_per_authid", authid)
            return (f"authid {authid[:100]!r} has {n} sessions in realm {realm[:200]!r} on this router "
                    f"(limits.max_sessions_per_authid)")
        return None

    # -- counting and the log --------------------------------------------------------------------------
    def _refuse(self, reason: str, who: str) -> str:
        """Count a refusal; log it if this reason has not been logged in the last LOG_EVERY seconds
        (a flood is a line every LOG_EVERY seconds, with how many, not a line per connection)."""
        self.stats.refused("", reason, who, "session" if reason == "max_sessions_per_authid" else "connection", who)
        now = self.clock()
        last, n = self._refusing.get(reason, (None, 0))
        if last is None or now - last >= LOG_EVERY:
            self.log.warn("refused {n} connection(s) or session(s) by limits.{reason} (the latest: {who})",
                          n=n + 1, reason=reason, who=who)
            self._refusing[reason] = (now, 0)
        else:
            self._refusing[reason] = (last, n + 1)
        return reason
