"""Where Redis is: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS, the server's
certificate verified against the system's CAs), or `unix:///path/redis.sock[?db=N]`. Plain parsing,
no Redis client imported: the config is validated before anything connects."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class RedisTarget:
    url: str = field(repr=False)  # may hold the password: display() for logs
    host: str | None = None
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    def display(self) -> str:
        """The URL for logs and errors, the password masked."""
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        user = f"{parts.username}:" if parts.username else ":"
        return self.url.replace(f"{parts.netloc.rsplit('@', 1)[0]}@", f"{user}***@", 1)


def parse_redis_url(url: str, password: str | None = None) -> RedisTarget:
    """A RedisTarget; ValueError saying what is wrong. `password` (from the config) overrides the URL's."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"not a Redis URL ({e})") from None
    query = parse_qs(parts.query)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs a socket path, e.g. unix:///run/redis/redis.sock")
        db = _db(query.get("db", ["0"])[0])
        return RedisTarget(url, path=parts.path, db=db, username=_u(parts.username),
                           password=password if password is not None else _u(parts.password))
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("must start with redis://, rediss:// or unix://")
    if not parts.hostname:
        raise ValueError("names no host")
    db = _db(parts.path.lstrip("/") or query.get("db", ["0"])[0])
    return RedisTarget(url, host=parts.hostname, port=port or 6379, db=db, username=_u(parts.username),
                       password=password if password is not None else _u(parts.password),
                       tls=parts.scheme == "rediss")


def _u(s: str | None) -> str | None:
    return unquote(s) if s else None


def _db(s: str) -> int:
    if not s.isdigit() or int(s) > 1_000_000:
        raise ValueError(f"the database must be a number, got {s!r}")
    return int(s)
