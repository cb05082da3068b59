"""The embedded session store: dicts, with indexes by realm, authid and authrole."""

from __future__ import annotations

from collections.abc import Iterable

from router.session import Session


class MemoryStorage:
    def __init__(self) -> None:
        self._by_id: dict[int, Session] = {}
        self._by_realm: dict[str, dict[int, Session]] = {}
        self._by_authid: dict[tuple[str, str], dict[int, Session]] = {}
        self._by_authrole: dict[tuple[str, str], dict[int, Session]] = {}

    def insert(self, session: Session) -> bool:
        if session.id in self._by_id:
            return False
        self._by_id[session.id] = session
        self._by_realm.setdefault(session.realm_uri, {})[session.id] = session
        self._index(session)
        return True

    def _index(self, s: Session) -> None:
        self._by_authid.setdefault((s.realm_uri, s.authid), {})[s.id] = s
        self._by_authrole.setdefault((s.realm_uri, s.authrole), {})[s.id] = s

    def _unindex(self, s: Session, authid: str, authrole: str) -> None:
        for index, key in ((self._by_authid, (s.realm_uri, authid)), (self._by_authrole, (s.realm_uri, authrole))):
            bucket = index.get(key)
            if bucket is not None:
                bucket.pop(s.id, None)
                if not bucket:
                    del index[key]

    def remove(self, session_id: int) -> Session | None:
        s = self._by_id.pop(session_id, None)
        if s is None:
            return None
        realm = self._by_realm[s.realm_uri]
        del realm[session_id]
        if not realm:
            del self._by_realm[s.realm_uri]
        self._unindex(s, s.authid, s.authrole)
        return s

    def get(self, session_id: int) -> Session | None:
        return self._by_id.get(session_id)

    def count(self, realm_uri: str | None = None) -> int:
        if realm_uri is None:
            return len(self._by_id)
        return len(self._by_realm.get(realm_uri, ()))

    def select(self, realm_uri: str | None = None, authid: str | None = None,
               authrole: str | None = None) -> Iterable[Session]:
        """An index lookup when a realm and authid or authrole are given; else a scan of the realm or table."""
        if realm_uri is not None and authid is not None:
            found = self._by_authid.get((realm_uri, authid), {}).values()
            return [s for s in found if authrole is None or s.authrole == authrole]
        if realm_uri is not None and authrole is not None:
            return list(self._by_authrole.get((realm_uri, authrole), {}).values())
        pool = self._by_id if realm_uri is None else self._by_realm.get(realm_uri, {})
        return [s for s in pool.values()
                if (authid is None or s.authid == authid) and (authrole is None or s.authrole == authrole)]

    def changed(self, session: Session, old: dict) -> None:
        old_authid = old.get("authid", session.authid)
        old_authrole = old.get("authrole", session.authrole)
        if old_authid != session.authid or old_authrole != session.authrole:
            self._unindex(session, old_authid, old_authrole)
            self._index(session)
