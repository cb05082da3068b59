"""A cluster's cookie store: a cookie bound on one node re-authenticates on every node (issue 12,
point 6). Each binding is kept in Redis under the cookie's SHA-256 (the cookie itself is a bearer
credential, so Redis never holds it) with the cookie's expiry, as well as in the node's own store.

A lookup reads Redis (one GET, only for HELLOs offering `cookie` on realms that take it), so a logout
on any node ends the cookie on all of them. While Redis is away the node's own store answers: cookies
bound on this node still work there, and a logout then is local only (Redis forgets the binding when
it expires).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from router.auth import Welcome
from router.auth.cookie import CookieStore
from router.cluster.connection import connected

MAX_COOKIE = 256  # characters of a cookie value looked up in Redis; a longer one is nobody's


def cookie_key(cookie: str) -> str:
    return "cy:ck:" + hashlib.sha256(cookie.encode("utf-8", "surrogatepass")).hexdigest()


class ClusterCookieStore(CookieStore):
    log = Logger()

    def __init__(self, redis: Any) -> None:
        super().__init__()
        self.redis = redis

    def bind(self, cookie: str, realm: str, who: Welcome, max_age: float) -> None:
        super().bind(cookie, realm, who, max_age)
        if connected(self.redis):
            value = json.dumps({"realm": realm, "authid": who.authid, "authrole": who.authrole,
                                "authprovider": who.authprovider, "authextra": who.authextra})
            self.redis.set(cookie_key(cookie), value, pexpire=max(1, int(max_age * 1000))).addErrback(
                self._failed, "binding a cookie")

    def lookup(self, cookie: str | None, realm: str) -> Welcome | None | defer.Deferred:
        """A Deferred[Welcome | None] from Redis; the local answer while Redis is away."""
        if not cookie or len(cookie) > MAX_COOKIE or not connected(self.redis):
            return super().lookup(cookie, realm)
        d = self.redis.get(cookie_key(cookie))
        d.addCallback(self._found, realm)
        return d.addErrback(lambda f: self._failed(f, "reading a cookie") or super(ClusterCookieStore, self)
                            .lookup(cookie, realm))

    @staticmethod
    def _found(value: str | None, realm: str) -> Welcome | None:
        if value is None:
            return None
        d = json.loads(value)
        if d.get("realm") != realm:
            return None
        return Welcome(d["authid"], d["authrole"], "cookie", d.get("authprovider") or "static", d.get("authextra"))

    def revoke(self, cookie: str | None) -> None:
        super().revoke(cookie)
        if cookie and len(cookie) <= MAX_COOKIE and connected(self.redis):
            self.redis.delete(cookie_key(cookie)).addErrback(self._failed, "revoking a cookie")

    def _failed(self, failure: Any, what: str) -> None:
        self.log.warn("cluster cookie store: {what} failed: {e}", what=what, e=failure.getErrorMessage())
