"""Cookie tracking and cookie authentication (Crossbar's `cbtid`): the WebSocket upgrade sets a random
cookie; once a session on that connection authenticates by another method, the cookie remembers who
it was, and a later connection presenting it with authmethod `cookie` is welcomed as the same
principal — until the cookie expires or the client leaves with GOODBYE `wamp.close.logout`."""

from __future__ import annotations

import secrets
import time

from router.auth import Welcome

COOKIE_NAME = "cbtid"
LOGOUT = "wamp.close.logout"


class CookieStore:
    MAX = 100_000

    def __init__(self) -> None:
        self._bound: dict[str, tuple[str, Welcome, float]] = {}  # cookie → (realm, principal, expires)

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(24)

    def bind(self, cookie: str, realm: str, who: Welcome, max_age: float) -> None:
        if len(self._bound) >= self.MAX:
            self.purge()
            if len(self._bound) >= self.MAX:
                del self._bound[next(iter(self._bound))]
        self._bound[cookie] = (realm, who, time.time() + max_age)

    def lookup(self, cookie: str | None, realm: str) -> Welcome | None:
        entry = self._bound.get(cookie) if cookie else None
        if entry is None:
            return None
        bound_realm, who, expires = entry
        if time.time() >= expires:
            del self._bound[cookie]
            return None
        if bound_realm != realm:
            return None
        return Welcome(who.authid, who.authrole, "cookie", who.authprovider, who.authextra)

    def revoke(self, cookie: str | None) -> None:
        if cookie:
            self._bound.pop(cookie, None)

    def purge(self) -> int:
        now = time.time()
        dead = [c for c, (_, _, exp) in self._bound.items() if exp <= now]
        for c in dead:
            del self._bound[c]
        return len(dead)
