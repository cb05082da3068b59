"""Admin changes to realms and users, kept so they survive a restart.

The YAML config is the base layer; what the admin realm creates, changes or deletes is written here
and applied over it at start. Conflict rule: the admin change wins — a realm or user defined in both
places takes the admin definition, and one deleted through the admin realm stays deleted even though
the YAML still lists it (create it again through the admin realm to bring it back, empty).

Changes are kept as changes: `courtyard.realm.update` of a YAML realm records only the top-level keys
it replaced, so the realm keeps its YAML users and whatever the YAML says about the other keys.

SQLite from the standard library: each change is one transaction, so the file is never half written.
The database holds derived keys and hashes only, yet it says who may log in: it is created 0600 in a
0700 directory. A file that cannot be read as this database is refused by name, never taken as empty.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from realms.realm import Realm
from realms.registry import RealmRegistry
from realms.schema import ConfigError, apply_changes, parse_realm, parse_user
from realms.secrets import salted_cra

DB_NAME = "courtyard.db"
CREATED, CHANGED = "created", "changed"  # a realm's row: its whole definition, or changes over the YAML's
DELETED = "deleted"  # (a cluster's store in Redis: a deleted realm's row; SQLite says so by a NULL definition)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS realms (uri TEXT PRIMARY KEY, definition TEXT, kind TEXT);
CREATE TABLE IF NOT EXISTS users (realm TEXT, authid TEXT, definition TEXT, PRIMARY KEY (realm, authid));
"""
_ADVICE = "move it aside (a new, empty one is then created) or restore a backup"
log = Logger()


def overlay(uri: str, base: Realm | None, kind: str | None, definition: dict | None,
            users: dict[str, dict | None]) -> Realm | None:
    """Realm `uri` as its recorded changes make it over the YAML's `base` (None: no such realm), for a
    store kept elsewhere (a cluster's, in Redis). The rules of `RealmStore.apply`, one realm at a time;
    `kind` None: no realm row, only users. `base` is not changed. ConfigError for a bad record."""
    if kind == DELETED:
        return None
    if kind == CREATED:
        realm = parse_realm({**(definition or {}), "uri": uri}, f"stored realm {uri}")
    elif base is None:
        return None  # changes to a realm this node's config does not define, or nothing at all
    elif kind == CHANGED:
        realm = apply_changes(base, definition or {}, f"stored changes to realm {uri}")
        realm.users = dict(base.users)
    else:
        realm = dataclasses.replace(base, users=dict(base.users))
    for authid, d in users.items():
        if d is None:
            realm.users.pop(authid, None)
        else:
            realm.users[authid] = parse_user(authid, d, f"stored user {uri}/{authid}")
    return realm


class StoreError(Exception):
    """The database cannot be used; the message names the file and what to do."""


class StoreWriteError(StoreError):
    """A change could not be recorded (disk full, file locked, read-only, removed): the caller must
    not apply it in memory either, so the running node and the file never disagree."""


# Seconds a write waits for a lock held by another process (an operator's sqlite3 shell). Writes run
# on the reactor thread, so a long wait would stall every session: better a clear error, retried.
BUSY_TIMEOUT = 0.5


def store_path(data_dir: str | None) -> Path | None:
    """Where a node with this `admin.data_dir` keeps its database (None: in memory only)."""
    return None if data_dir is None else Path(data_dir) / DB_NAME


def _tighten(path: Path, mode: int) -> None:
    """Make `path` readable by its owner only (it says who may log in); say so once if it was not."""
    current = path.stat().st_mode & 0o777
    if current & 0o077:
        os.chmod(path, mode)
        log.warn("tightened permissions of {path} from {old:o} to {new:o}", path=str(path), old=current, new=mode)


def _salt_stored_cra_secrets(db: sqlite3.Connection, path: Path) -> None:
    """Plain WAMP-CRA secrets kept by an older Courtyard become salted derived keys."""
    plain = []
    for realm, authid, definition in db.execute("SELECT realm, authid, definition FROM users"):
        try:
            d = json.loads(definition) if definition is not None else None
            cra = d.get("wampcra") if isinstance(d, dict) else None
            if isinstance(cra, dict) and isinstance(cra.get("secret"), str) and "salt" not in cra:
                plain.append((realm, authid, {**d, "wampcra": salted_cra(cra["secret"])}))
        except ValueError:
            continue  # apply() refuses it by name
    if plain:
        with db:
            db.execute("BEGIN")
            db.executemany("UPDATE users SET definition = ? WHERE realm = ? AND authid = ?",
                           [(json.dumps(d), realm, authid) for realm, authid, d in plain])
        db.execute("VACUUM")
        log.info("{n} stored WAMP-CRA secret(s) in {path} replaced by salted keys", n=len(plain), path=str(path))


class RealmStore:
    def __init__(self, path: str | Path | None, readonly: bool = False) -> None:
        """`path` None keeps changes in memory only (tests, or a node with no data directory).
        `readonly` (check-config) reads an existing database and never creates or changes one."""
        self.path = None if path is None else Path(path)
        self._kind = "kind"  # the column, or NULL in a read-only database from before it
        self._inode: int | None = None  # the file's, when writable: a removed or replaced file is noticed
        self._create_on_write = False  # no file yet: the first change makes it
        try:
            self._db = self._open(readonly)
        except sqlite3.Error as e:
            raise self._error(e) from None
        except OSError as e:  # a directory that cannot be made or read
            raise StoreError(f"admin database {self.path}: {e.strerror or e}; check admin.data_dir") from None

    def _error(self, e: Exception) -> StoreError:
        return StoreError(f"admin database {self.path}: {e}; {_ADVICE}")

    def _open(self, readonly: bool) -> sqlite3.Connection:
        p = self.path
        if p is None or not p.exists():  # nothing recorded yet: the file is made with the first change
            self._create_on_write = p is not None and not readonly
            db = sqlite3.connect(":memory:", isolation_level=None)
            db.executescript(_SCHEMA)
            return db
        if p.exists() and p.stat().st_size == 0:
            raise StoreError(f"admin database {p}: the file is empty (0 bytes): truncated, or not a Courtyard "
                             f"database; {_ADVICE}")
        if readonly:
            db = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        else:
            db = self._connect(p)
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StoreError(f"admin database {p}: damaged ({check[0] if check else 'no answer'}); {_ADVICE}")
        if not readonly:
            db.executescript(_SCHEMA)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"realms", "users"} <= tables:
            raise StoreError(f"admin database {p}: not a Courtyard database (no realms/users tables); {_ADVICE}")
        if "kind" not in {row[1] for row in db.execute("PRAGMA table_info(realms)")}:
            if readonly:  # written before changes were kept as changes: read it as it is
                self._kind = "NULL"
            else:
                db.execute("ALTER TABLE realms ADD COLUMN kind TEXT")
        if not readonly:
            db.execute("PRAGMA secure_delete = ON")  # a replaced record leaves no old bytes behind
            _salt_stored_cra_secrets(db, p)
        return db

    def _connect(self, p: Path) -> sqlite3.Connection:
        """The database file for writing, made 0600 in a 0700 directory if it is not there yet."""
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _tighten(p.parent, 0o700)
        if p.exists():
            _tighten(p, 0o600)
        else:
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        db = sqlite3.connect(str(p), isolation_level=None, timeout=BUSY_TIMEOUT)
        self._inode = os.stat(p).st_ino
        return db

    def _create(self) -> None:
        """The first change of a node that had no database: make the file and its directory now (an
        unused data_dir is never created). Nothing was recorded before, so nothing is carried over."""
        db = self._connect(self.path)
        db.executescript(_SCHEMA)
        db.execute("PRAGMA secure_delete = ON")
        self._db.close()
        self._db, self._create_on_write = db, False
        log.info("admin database {path} created", path=str(self.path))

    # -- changes ---------------------------------------------------------------------------------
    # Each raises StoreWriteError (after one log line naming the file) when the change is not on disk.
    def save_realm(self, uri: str, definition: dict | None) -> None:
        """Record a realm created with this whole definition; None records its deletion (and forgets
        its users' changes)."""
        self._write(self._save_realm, uri, definition)

    def _save_realm(self, uri: str, definition: dict | None) -> None:
        self._db.execute("INSERT OR REPLACE INTO realms VALUES (?, ?, ?)",
                         (uri, None if definition is None else json.dumps(definition), CREATED))
        if definition is None:
            self._db.execute("DELETE FROM users WHERE realm = ?", (uri,))

    def update_realm(self, uri: str, changes: dict) -> None:
        """Record replaced top-level keys: into the whole definition of a realm created here, else as
        changes over the YAML's definition (earlier changes to other keys stay)."""
        self._write(self._update_realm, uri, changes)

    def _update_realm(self, uri: str, changes: dict) -> None:
        row = self._db.execute("SELECT definition, kind FROM realms WHERE uri = ?", (uri,)).fetchone()
        if row is None or row[0] is None:
            kind, merged = CHANGED, dict(changes)
        else:  # an old row without kind stays without: apply() tells it by the YAML
            kind, merged = row[1], {**json.loads(row[0]), **changes}
        self._db.execute("INSERT OR REPLACE INTO realms VALUES (?, ?, ?)", (uri, json.dumps(merged), kind))

    def save_user(self, realm: str, authid: str, definition: dict | None) -> None:
        """Record a user's definition; None records its removal."""
        self._write(self._save_user, realm, authid, definition)

    def _save_user(self, realm: str, authid: str, definition: dict | None) -> None:
        self._db.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
                         (realm, authid, None if definition is None else json.dumps(definition)))

    def _write(self, change: Any, *args: Any) -> None:
        """Run one change as one transaction; on any failure roll it back, log one line, raise."""
        try:
            if self._create_on_write:
                self._create()
            db = self._db
            self._still_there()
            db.execute("BEGIN IMMEDIATE")  # the write lock now, or a clear 'locked' after BUSY_TIMEOUT
            try:
                change(*args)
                db.execute("COMMIT")
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
        except (sqlite3.Error, OSError) as e:
            why = getattr(e, "strerror", None) or str(e)
            log.error("admin database {path}: a change could not be stored ({why}); it was refused, the "
                      "running node is unchanged", path=str(self.path), why=why)
            raise StoreWriteError(f"admin database {self.path}: the change could not be stored ({why}); "
                                  f"nothing was changed") from None

    def _still_there(self) -> None:
        """Writes to a file removed (or replaced) under the node would be lost at the next start."""
        if self._inode is not None and os.stat(self.path).st_ino != self._inode:
            raise OSError(f"{self.path} was replaced by another file; restart the node to use it")

    # -- start -----------------------------------------------------------------------------------
    def apply(self, registry: RealmRegistry) -> None:
        """Lay the recorded changes over the registry built from YAML. StoreError if a record
        cannot be read."""
        try:
            self._apply(registry)
        except (sqlite3.Error, ValueError, TypeError) as e:  # ConfigError and bad JSON are ValueErrors
            raise self._error(e) from None

    def _apply(self, registry: RealmRegistry) -> None:
        rows = self._db.execute(f"SELECT uri, definition, {self._kind} FROM realms ORDER BY rowid")
        for uri, definition, kind in rows.fetchall():
            base = registry.get(uri)
            if definition is None:
                if base is not None:
                    registry.remove(uri)
                continue
            raw: Any = json.loads(definition)
            if not isinstance(raw, dict):
                raise ConfigError(f"stored realm {uri}", "not a mapping")
            if kind == CREATED or (kind is None and base is None):  # (an old row: whole if the YAML lacks it)
                realm = parse_realm(raw, f"stored realm {uri}")
            elif base is None:
                log.warn("admin changes to realm {uri} ignored: the config no longer defines it", uri=uri)
                continue
            else:
                realm = apply_changes(base, raw, f"stored changes to realm {uri}")
            if base is not None:
                registry.remove(uri)
            registry.add(realm)
        for realm_uri, authid, definition in self._db.execute("SELECT realm, authid, definition FROM users"):
            realm = registry.get(realm_uri)
            if realm is None:
                continue
            if definition is None:
                realm.users.pop(authid, None)
            else:
                realm.users[authid] = parse_user(authid, json.loads(definition), f"stored user {realm_uri}/{authid}")

    def overrides(self) -> list[str]:
        """What the recorded changes do to the config file's realms and users, one line each
        (`check-config` says so: the admin change wins)."""
        said = []
        rows = self._db.execute(f"SELECT uri, definition, {self._kind} FROM realms ORDER BY rowid").fetchall()
        for uri, definition, kind in rows:
            if definition is None:
                said.append(f"realm {uri}: deleted")
            elif kind == CHANGED:
                said.append(f"realm {uri}: {', '.join(sorted(json.loads(definition))) or 'nothing'} changed")
            else:
                said.append(f"realm {uri}: defined here")
        for realm, authid, definition in self._db.execute("SELECT realm, authid, definition FROM users ORDER BY rowid"):
            said.append(f"user {authid} of realm {realm}: {'removed' if definition is None else 'defined here'}")
        return said

    def close(self) -> None:
        self._db.close()
