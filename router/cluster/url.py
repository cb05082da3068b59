"""Where Redis is: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS, the server's
certificate verified against the system's CAs), `unix:///path/redis.sock[?db=N]`, or behind Sentinel:
`redis+sentinel://[[user]:password@]host:port[,host:port…]/MASTER_NAME[/db]` (the form other Redis
clients use; `rediss+sentinel://` for TLS to the master), the password being the master's and the
sentinels' own password and TLS set apart (`cluster.sentinel_password`, `cluster.sentinel_tls`).
Plain parsing, no Redis client imported: the config is validated before anything connects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit


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
    sentinels: tuple[tuple[str, int], ...] = ()  # non-empty: ask these where the master is
    master_name: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    sentinel_tls: bool = False

    def display(self) -> str:
        """The URL for logs and errors, the password masked."""
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        user = f"{parts.username}:" if parts.username else ":"
        return self.url.replace(f"{parts.netloc.rsplit('@', 1)[0]}@", f"{user}***@", 1)


def parse_redis_url(url: str, password: str | None = None, sentinel_password: str | None = None,
                    sentinel_tls: bool = False) -> RedisTarget:
    """A RedisTarget; ValueError saying what is wrong. `password` (from the config) overrides the URL's;
    the sentinel settings only go with a redis+sentinel:// URL."""
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ValueError(f"not a Redis URL ({e})") from None
    if parts.scheme in SENTINEL_SCHEMES:
        target = _sentinel(url, parts, password)
        return replace(target, sentinel_password=sentinel_password, sentinel_tls=sentinel_tls)
    if sentinel_password is not None or sentinel_tls:
        raise ValueError("sentinel_password and sentinel_tls go with a redis+sentinel:// URL only")
    try:
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
        raise ValueError("must start with redis://, rediss:// or unix://, or redis+sentinel:// for Sentinel")
    if not parts.hostname:
        raise ValueError("names no host")
    db = _db(parts.path.lstrip("/") or query.get("db", ["0"])[0])
    return RedisTarget(url, host=parts.hostname, port=port or 6379, db=db, username=_u(parts.username),
                       password=password if password is not None else _u(parts.password),
                       tls=parts.scheme == "rediss")


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
MAX_SENTINELS = 16
_MASTER_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _sentinel(url: str, parts: SplitResult, password: str | None) -> RedisTarget:
    """`redis+sentinel://[[user]:password@]h:p[,h:p…]/MASTER[/db]`: urlsplit cannot read a host list,
    so the netloc is split here."""
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, url_password = userinfo.partition(":") if userinfo else ("", "", "")
    sentinels = []
    for item in hosts.split(","):
        host, port = _host_port(item.strip())
        sentinels.append((host, port))
    if len(sentinels) > MAX_SENTINELS:
        raise ValueError(f"names {len(sentinels)} sentinels, at most {MAX_SENTINELS}")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("redis+sentinel:// needs the master's name after the hosts, e.g. "
                         "redis+sentinel://127.0.0.1:26379/mymaster[/db]")
    name = unquote(path[0])
    if not _MASTER_NAME.match(name):
        raise ValueError(f"the master's name must be 1-128 letters, digits, '_', '.', ':' or '-', got {name!r}")
    db = _db(path[1] if len(path) == 2 else parse_qs(parts.query).get("db", ["0"])[0])
    return RedisTarget(url, db=db, username=_u(username),
                       password=password if password is not None else _u(url_password),
                       tls=parts.scheme == "rediss+sentinel", sentinels=tuple(sentinels), master_name=name)


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [v6]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"names a sentinel without a host ({item!r})")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError(f"a sentinel's port must be 1-65535, got {port!r}")
    return host, int(port) if port else SENTINEL_PORT


def _u(s: str | None) -> str | None:
    return unquote(s) if s else None


def _db(s: str) -> int:
    if not s.isdigit() or int(s) > 1_000_000:
        raise ValueError(f"the database must be a number, got {s!r}")
    return int(s)
