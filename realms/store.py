"""Admin changes to realms and users, kept so they survive a restart.

The YAML config is the base layer; what the admin realm creates, changes or deletes is written here
and applied over it at start. Conflict rule: the admin change wins — a realm or user defined in both
places takes the admin definition, and one deleted through the admin realm stays deleted even though
the YAML still lists it (create it again through the admin realm to bring it back).

SQLite from the standard library: each change is one transaction, so the file is never half written.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from realms.registry import RealmRegistry
from realms.schema import parse_realm, parse_user

_SCHEMA = """
CREATE TABLE IF NOT EXISTS realms (uri TEXT PRIMARY KEY, definition TEXT);
CREATE TABLE IF NOT EXISTS users (realm TEXT, authid TEXT, definition TEXT, PRIMARY KEY (realm, authid));
"""


class RealmStore:
    def __init__(self, path: str | Path | None) -> None:
        """`path` None keeps changes in memory only (tests, or a node with no data directory)."""
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None)
        self._db.executescript(_SCHEMA)

    def save_realm(self, uri: str, definition: dict | None) -> None:
        """Record a realm's definition; None records its deletion (and forgets its users' changes)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO realms VALUES (?, ?)",
                             (uri, None if definition is None else json.dumps(definition)))
            if definition is None:
                self._db.execute("DELETE FROM users WHERE realm = ?", (uri,))

    def save_user(self, realm: str, authid: str, definition: dict | None) -> None:
        """Record a user's definition; None records its removal."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
                             (realm, authid, None if definition is None else json.dumps(definition)))

    def apply(self, registry: RealmRegistry) -> None:
        """Lay the recorded changes over the registry built from YAML."""
        for uri, definition in self._db.execute("SELECT uri, definition FROM realms ORDER BY rowid"):
            if uri in registry:
                registry.remove(uri)
            if definition is not None:
                registry.add(parse_realm(json.loads(definition), f"stored realm {uri}"))
        for realm_uri, authid, definition in self._db.execute("SELECT realm, authid, definition FROM users"):
            realm = registry.get(realm_uri)
            if realm is None:
                continue
            if definition is None:
                realm.users.pop(authid, None)
            else:
                realm.users[authid] = parse_user(authid, json.loads(definition), f"stored user {realm_uri}/{authid}")

    def close(self) -> None:
        self._db.close()
