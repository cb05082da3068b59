"""The embedded session store: dicts, with indexes by realm, authid and authrole."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet import defer

from router.session import Session

# An index maps realm → key → the one Session with that key, or a dict of them when there are several:
# most authids have one session, and a dict per session would cost a third of a kilobyte each.
Bucket = Session | dict[int, Session]
Index = dict[str, dict[str, Bucket]]


def _add(index: Index, realm: str, key: str, s: Session) -> None:
    keys = index.setdefault(realm, {})
    cur = keys.get(key)
    if cur is None:
        keys[key] = s
    elif type(cur) is dict:
        cur[s.id] = s
    else:
        keys[key] = {cur.id: cur, s.id: s}


def _discard(index: Index, realm: str, key: str, s: Session) -> None:
    keys = index.get(realm)
    cur = keys.get(key) if keys is not None else None
    if type(cur) is dict:
        cur.pop(s.id, None)
        if len(cur) == 1:
            keys[key] = next(iter(cur.values()))
        return
    if cur is s:
        del keys[key]
        if not keys:
            del index[realm]


def _members(index: Index, realm: str, key: str) -> list[Session]:
    cur = index.get(realm, {}).get(key)
    if cur is None:
        return []
    return list(cur.values()) if type(cur) is dict else [cur]


class MemoryStorage:
    clustered = False  # the cluster_* reads see this node only

    def __init__(self) -> None:
        self._by_id: dict[int, Session] = {}
        self._by_realm: dict[str, dict[int, Session]] = {}
        self._by_authid: Index = {}
        self._by_authrole: Index = {}

    def insert(self, session: Session) -> bool:
        if session.id in self._by_id:
            return False
        self._by_id[session.id] = session
        self._by_realm.setdefault(session.realm_uri, {})[session.id] = session
        self._index(session)
        return True

    def _index(self, s: Session) -> None:
        _add(self._by_authid, s.realm_uri, s.authid, s)
        _add(self._by_authrole, s.realm_uri, s.authrole, s)

    def _unindex(self, s: Session, authid: str, authrole: str) -> None:
        _discard(self._by_authid, s.realm_uri, authid, s)
        _discard(self._by_authrole, s.realm_uri, authrole, s)

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
            found = _members(self._by_authid, realm_uri, authid)
            return [s for s in found if authrole is None or s.authrole == authrole]
        if realm_uri is not None and authrole is not None:
            return _members(self._by_authrole, realm_uri, authrole)
        pool = self._by_id if realm_uri is None else self._by_realm.get(realm_uri, {})
        return [s for s in pool.values()
                if (authid is None or s.authid == authid) and (authrole is None or s.authrole == authrole)]

    def changed(self, session: Session, old: dict) -> None:
        old_authid = old.get("authid", session.authid)
        old_authrole = old.get("authrole", session.authrole)
        if old_authid != session.authid or old_authrole != session.authrole:
            self._unindex(session, old_authid, old_authrole)
            self._index(session)

    def testaments_changed(self, session_id: int, testaments: dict | None) -> None:
        """One node: the meta API's own memory is the only copy needed."""

    # The cluster-wide queries of the table API: on one node, the node's own records, at once.
    def cluster_count(self, realm_uri: str | None = None, authrole: str | None = None) -> defer.Deferred:
        if authrole is not None:
            return defer.succeed(len(self.select(realm_uri, authrole=authrole)))
        return defer.succeed(self.count(realm_uri))

    def cluster_select(self, realm_uri: str | None = None, authid: str | None = None,
                       authrole: str | None = None) -> defer.Deferred:
        return defer.succeed([s.to_details_map() for s in self.select(realm_uri, authid, authrole)])

    def cluster_details(self, session_id: int) -> defer.Deferred:
        s = self._by_id.get(session_id)
        return defer.succeed(None if s is None else s.to_details_map())
