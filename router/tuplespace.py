"""The session table: the only way code touches session records (after Bondy's session tuplespace).

Callers use open / fetch / lookup / to_details_map / size / list / incr_seq / update / close; the
storage backend behind it is chosen in config and never seen by them. Those calls are synchronous
and see this node's sessions (in a cluster too: the hot path never waits on Redis). The cluster-wide
reads, `cluster_size`, `cluster_list` and `cluster_details`, return Deferreds: on one node they fire
at once with the same answers, in a cluster they ask every node (each answers for its own sessions,
exactly) and see every node's sessions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from router.session import Peer, Session
from router.storage import SessionStorage
from router.wamp import MAX_ID


class SessionNotFound(KeyError):
    """`fetch` of an id that is not in the table."""


class TableFull(Exception):
    """`open` beyond the configured max_sessions (plus the realm's reserve, if it has one)."""


# Fields `update` may change. Identity (id, realm, transport, created) is fixed for a session's life.
_UPDATABLE = frozenset({"authid", "authrole", "authmethod", "authprovider", "authextra", "expires_in",
                        "rate", "quota", "agent", "roles", "data"})

_rand = random.SystemRandom()


class SessionTable:
    def __init__(self, storage: SessionStorage, max_sessions: int | None = None,
                 reserves: dict[str, int] | None = None) -> None:
        self._storage = storage
        self.max_sessions = max_sessions
        # Realm → sessions it may open beyond max_sessions: the admin realm's, so that an operator can
        # still get in to fix a full router.
        self.reserves = reserves or {}
        self._on_close: list[Callable[[Session], None]] = []
        self._on_ended: list[Callable[[Session, str], None]] = []
        # A cluster node sets this: remote_kill(node_id, session_ids, realm, reason, message) asks
        # another node to end sessions of its own (router/cluster/bus.py).
        self.remote_kill: Callable[[str, list[int], str, str, str | None], Any] | None = None

    @property
    def clustered(self) -> bool:
        """True when the cluster_* calls see every node's sessions, not just this node's."""
        return self._storage.clustered

    def on_close(self, callback: Callable[[Session], None]) -> None:
        """Run `callback(session)` whenever a session leaves the table (meta events, testaments)."""
        self._on_close.append(callback)

    def on_ended(self, callback: Callable[[Session, str], None]) -> None:
        """Run `callback(session, reason)` whenever a session leaves the table, with how it ended
        (session processes' terminate)."""
        self._on_ended.append(callback)

    def open(self, realm_uri: str, transport: Peer, **fields: Any) -> Session:
        """Create and store a record with a fresh id drawn at random from [1, 2^53] (WAMP spec, IDs)."""
        if self.max_sessions is not None:
            self._admit(realm_uri)
        while True:
            session = Session(_rand.randint(1, MAX_ID), realm_uri, transport, **fields)
            if self._storage.insert(session):
                return session

    def _admit(self, realm_uri: str) -> None:
        """A realm with a reserve may fill max_sessions and its reserve; the others only max_sessions,
        where a reserved realm's sessions up to its reserve do not count (they are on the reserve, so
        an admin session admitted when the table was full holds no ordinary slot once others leave)."""
        total = self._storage.count()
        reserve = self.reserves.get(realm_uri, 0)
        if reserve:
            limit = self.max_sessions + reserve
            if total >= limit:
                raise TableFull(f"the router holds its maximum of {limit} sessions")
            return
        on_reserve = sum(min(self._storage.count(r), n) for r, n in self.reserves.items() if n) if total else 0
        if total - on_reserve >= self.max_sessions:
            raise TableFull(f"the router holds its maximum of {self.max_sessions} sessions")

    def fetch(self, session_id: int) -> Session:
        session = self._storage.get(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        return session

    def lookup(self, session_id: int) -> Session | None:
        return self._storage.get(session_id)

    def to_details_map(self, session_id: int) -> dict:
        return self.fetch(session_id).to_details_map()

    def size(self, realm_uri: str | None = None) -> int:
        return self._storage.count(realm_uri)

    def list(self, realm_uri: str | None = None, authid: str | None = None,
             authrole: str | None = None, active_within: float | None = None) -> list[Session]:
        """Sessions matching every filter given. Cost: an index lookup when realm and authid or
        authrole are given, else a scan of the realm (or the table); `active_within` filters the result."""
        found = self._storage.select(realm_uri, authid, authrole)
        if active_within is not None:
            since = time.time() - active_within
            return [s for s in found if s.last_active >= since]
        return list(found)

    def activity(self, realm_uri: str, dt: float) -> int:
        """Distinct authids with a session active in the last `dt` seconds: a scan of the realm."""
        since = time.time() - dt
        return len({s.authid for s in self._storage.select(realm_uri) if s.last_active >= since})

    # -- cluster-wide, asynchronous ---------------------------------------------------------------
    def cluster_size(self, realm_uri: str | None = None, authrole: str | None = None) -> defer.Deferred:
        """Deferred[int]: sessions on every node (in the realm, of the authrole)."""
        return self._storage.cluster_count(realm_uri, authrole)

    def cluster_list(self, realm_uri: str | None = None, authid: str | None = None,
                     authrole: str | None = None) -> defer.Deferred:
        """Deferred[list[dict]]: details maps of the matching sessions on every node (in a cluster,
        each with `node`; at most 10,000)."""
        return self._storage.cluster_select(realm_uri, authid, authrole)

    def cluster_details(self, session_id: int) -> defer.Deferred:
        """Deferred[dict | None]: a session's details map, wherever it is."""
        return self._storage.cluster_details(session_id)

    def cluster_kill(self, found: list[dict], reason: str, message: str | None = None) -> defer.Deferred:
        """End the sessions of `found` (details maps from cluster_list/cluster_details) wherever they
        are: this node's at once, another node's by a message to it. Deferred[int]: how many."""
        remote: dict[str, list[int]] = {}
        killed = 0
        for d in found:
            node = d.get("node")
            if node is None or self._storage.get(d["session"]) is not None:
                killed += self.kill(d["session"], reason, message)
            elif self.remote_kill is not None:
                remote.setdefault(node, []).append(d["session"])
        sends = [defer.maybeDeferred(self.remote_kill, node, ids, found[0]["realm"], reason, message)
                 for node, ids in remote.items()]
        sent = sum(len(ids) for ids in remote.values())
        return defer.gatherResults(sends).addCallback(lambda _: killed + sent)

    def testaments_changed(self, session_id: int, testaments: dict | None) -> None:
        """The meta API changed a session's testaments: a cluster backend keeps them in Redis."""
        self._storage.testaments_changed(session_id, testaments)

    def incr_seq(self, session_id: int) -> int:
        return self.fetch(session_id).next_seq()

    def update(self, session_id: int, **fields: Any) -> Session:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"session fields not updatable: {sorted(unknown)}")
        session = self.fetch(session_id)
        old = {k: getattr(session, k) for k in fields}
        for k, v in fields.items():
            setattr(session, k, v)
        self._storage.changed(session, old)
        return session

    def kill(self, session_id: int, reason: str, message: str | None = None) -> bool:
        """Ask the session's connection to end it with GOODBYE `reason` (the record goes when it has)."""
        session = self._storage.get(session_id)
        if session is None:
            return False
        session.transport.close(reason, message)
        return True

    def close(self, session_id: int, reason: str = "closed") -> Session | None:
        """Remove the record; its realm drops its subscriptions, registrations and pending calls.
        `reason` says how it ended, for the on_close callbacks. Closing an id that is gone already is
        harmless (returns None)."""
        session = self._storage.remove(session_id)
        if session is None:
            return None
        if session.realm is not None:
            session.realm.detach(session)
        for callback in self._on_close:
            callback(session)
        for ended in self._on_ended:
            ended(session, reason)
        return session
