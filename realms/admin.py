"""The admin realm's procedures: manage realms, sessions and users of a running node (after Bondy's
admin API). They reach sessions through the session table API only, given to them by injection, and
record realm and user changes in the RealmStore so they survive a restart. Every action is logged
with who did it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from realms.checks import check_realm, check_user
from realms.errors import WampError
from realms.registry import RealmRegistry
from realms.schema import ConfigError, apply_changes, parse_realm, parse_user
from realms.secrets import MASK, hash_secret, is_secret_name, redact, salted_cra
from realms.store import RealmStore, StoreWriteError
from realms.uris import is_loose_uri

INVALID_ARGUMENT = "wamp.error.invalid_argument"
NO_SUCH_SESSION = "wamp.error.no_such_session"
NO_SUCH_REALM = "courtyard.error.no_such_realm"
REALM_EXISTS = "courtyard.error.realm_exists"
NO_SUCH_USER = "courtyard.error.no_such_user"
USER_EXISTS = "courtyard.error.user_exists"
REALM_DELETED = "courtyard.close.realm_deleted"  # GOODBYE reason for sessions of a deleted realm
USER_REMOVED = "courtyard.close.user_removed"
KILLED = "wamp.close.killed"
INVALID_URI = "wamp.error.invalid_uri"
STORAGE_FAILED = "courtyard.error.storage_failed"  # the change could not be recorded, so it was not made
MAX_LISTED = 10_000  # entries of courtyard.process.list


class AdminError(WampError):
    """Answered to the caller as a WAMP ERROR with this URI."""


def _cra(value: Any) -> dict:
    """A WAMP-CRA secret (`"s3cret"` or `{secret: ...}`) becomes a salted derived key before it is kept
    anywhere; an already derived `{key, salt, iterations, keylen}` is kept as given."""
    if isinstance(value, dict) and set(value) == {"secret"}:
        value = value["secret"]
    if isinstance(value, str):
        if not value:
            raise AdminError(INVALID_ARGUMENT, "wampcra: the secret must not be empty")
        return salted_cra(value)
    if not isinstance(value, dict) or "salt" not in value:
        raise AdminError(INVALID_ARGUMENT, "wampcra must be a secret, {secret}, or {key, salt, iterations, keylen}")
    return value


def _errors(errors: list[ConfigError]) -> AdminError:
    return AdminError(INVALID_ARGUMENT, "; ".join(map(str, errors)))


def _need(value: Any, kind: type | tuple, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise AdminError(INVALID_ARGUMENT,  # the type only: the value may be a secret, or huge
                         f"{what} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _short(value: Any) -> str:
    """An argument in an error text: a short repr, never all of a long string."""
    text = repr(value[:60]) if isinstance(value, str) else type(value).__name__
    return text + "…" if isinstance(value, str) and len(value) > 60 else text


def _loggable(fn: Callable, args: list, kwargs: dict) -> dict:
    """The call's arguments for the log: a secret is masked whether it came by keyword, by position
    (named by the procedure's parameters) or nested in a mapping."""
    names = list(inspect.signature(fn).parameters)
    return {"args": [MASK if i < len(names) and is_secret_name(names[i]) else redact(a) for i, a in enumerate(args)],
            "kwargs": redact(kwargs)}


def _store_failed(failure: Any) -> Any:
    failure.trap(StoreWriteError)
    raise AdminError(STORAGE_FAILED, failure.getErrorMessage())


def _then(recorded: Any, apply: Callable[[], Any]) -> Any:
    """Make a change once it is recorded: at once after the SQLite store's write; after Redis took it
    for a cluster's store (`recorded` is then a Deferred), so a change the store refused is not made."""
    if hasattr(recorded, "addCallback"):
        return recorded.addCallback(lambda _: apply())
    return apply()


def _policy(realm: Any) -> dict:
    """The auth methods and roles a realm runs with, whatever its definition left to the defaults."""
    auth = realm.auth
    roles = None if realm.roles is None else {
        name: [{"uri": p.uri, "match": p.match, "allow": sorted(p.allow), **({"disclose": sorted(p.disclose)}
                                                                           if p.disclose else {})}
               for p in role.permissions] for name, role in realm.roles.items()}
    return {"authmethods": auth.enabled(), "anonymous_authrole": auth.anonymous_authrole if auth.anonymous else None,
            "roles": roles if roles is not None else "none defined: every session may do everything"}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=lambda v: f"<{type(v).__name__}>")


def call_text(procedure: str, args: list, kwargs: dict) -> str:
    """A call as one readable line, `courtyard.user.add("shop", "bob", role="customer")`: values as
    JSON (control characters escaped), already masked and cut short by `_loggable`."""
    return f"{procedure}({', '.join([*map(_json, args), *(f'{k}={_json(v)}' for k, v in kwargs.items())])})"


class AdminAPI:
    log = Logger()

    def __init__(self, registry: RealmRegistry, sessions: Any, store: RealmStore, admin_realm: str,
                 wipe: Callable[[], int], drop: Callable[[str], None] = lambda uri: None,
                 nodes: Callable[[], Any] | None = None, max_uri_length: int = 4096,
                 processes: Any = None, forward: Callable[..., Any] | None = None) -> None:
        self.registry = registry
        self.sessions = sessions  # the session table (router.tuplespace.SessionTable) API
        self.store = store
        self.admin_realm = admin_realm
        self.wipe_expired = wipe
        self.drop_realm = drop  # forgets a deleted realm's running state (retained events, registrations)
        self.nodes = nodes  # the cluster's nodes (a Deferred of announcements); None: not offered
        self.max_uri_length = max_uri_length  # of a kill reason (limits.max_uri_length)
        self.procedures: dict[str, Callable] = {
            f"courtyard.{name.replace('_', '.', 1)}": getattr(self, name) for name in (
                "realm_list", "realm_get", "realm_create", "realm_update", "realm_delete",
                "session_count", "session_list", "session_get", "session_kill", "session_kill_by_authid",
                "session_kill_all", "session_activity", "session_wipe", "session_set_data",
                "user_list", "user_get", "user_add", "user_update", "user_remove", "node_list")}
        # Session processes (router.processes.Processes): start, started, terminate, call, cast, list.
        self.processes = processes
        self.forward = forward  # in a cluster: run a process procedure on another node
        if processes is not None:
            self.procedures.update({f"courtyard.process.{name}": getattr(self, f"process_{name}") for name in (
                "list", "start", "started", "call", "cast", "terminate")})

    def call(self, procedure: str, who: str, args: list, kwargs: dict) -> Any:
        """Run one procedure for the admin `who`; AdminError for anything the caller got wrong."""
        fn = self.procedures[procedure]
        try:
            result = fn(*args, **kwargs)
        except TypeError as e:  # wrong arguments: say which, not Python's name for the method
            raise AdminError(INVALID_ARGUMENT, f"{procedure}: {str(e).split('() ', 1)[-1]}")
        except ConfigError as e:  # every error found, each naming its field
            raise AdminError(INVALID_ARGUMENT, "; ".join(map(str, getattr(e, "errors", [e]))))
        except StoreWriteError as e:  # logged by the store, by file name; nothing was changed
            raise AdminError(STORAGE_FAILED, str(e))
        if hasattr(result, "addErrback"):  # a cluster's store answers later, from Redis
            result.addErrback(_store_failed)
        if not procedure.endswith((".list", ".get", ".count", ".activity", ".started")):
            shown = _loggable(fn, args, kwargs)
            self.log.info("admin {who} called {call}", who=who, procedure=procedure,
                          call=call_text(procedure, shown["args"], shown["kwargs"]), **shown)
        return result

    # -- nodes -----------------------------------------------------------------------------------
    def node_list(self) -> Any:
        """Every node of the cluster (one on a single node): id, address, sessions, started, heartbeat."""
        if self.nodes is None:
            return []
        return self.nodes()

    # -- session processes -----------------------------------------------------------------------
    # A process lives on its session's node. In a cluster a request for another node's session is
    # forwarded there (`forward(node, name, session_id, args)`, a Deferred), and the list is every node's.
    def _where(self, name: str, session_id: Any, *args: Any) -> Any:
        """Run a process procedure where the session lives: here, or on its node."""
        if self.sessions.lookup(_need(session_id, int, "session id")) is not None or not self._clustered \
                or self.forward is None:
            return self.process_here(name, session_id, *args)

        def found(details: dict | None) -> Any:
            if details is None or details.get("node") is None:
                raise AdminError(NO_SUCH_SESSION, f"no session {session_id}")
            return self.forward(details["node"], name, session_id, list(args))

        return self.sessions.cluster_details(session_id).addCallback(found)

    def process_here(self, name: str, session_id: Any, *args: Any) -> Any:
        """A process procedure on this node's session (also what another node's forwarded request runs)."""
        if name == "list":
            return self.processes.list(*args)[:MAX_LISTED]
        if self.sessions.lookup(_need(session_id, int, "session id")) is None:
            raise AdminError(NO_SUCH_SESSION, f"no session {session_id}")
        p = self.processes
        if name == "start":
            return p.start(session_id, arg=args[0] if args else None)
        if name == "started":
            return p.started(session_id)
        if name == "call":
            return p.call(session_id, *args)
        if name == "cast":
            return p.cast(session_id, *args)
        if name == "terminate":
            return p.terminate(session_id, "terminated by an admin")
        raise AdminError(INVALID_ARGUMENT, f"no process procedure {_short(name)}")

    def process_list(self, realm: str | None = None) -> Any:
        """The processes (of a realm): session, realm, class, started, busy, mailbox, restarts, handled
        (at most MAX_LISTED); in a cluster every node's, each with its `node`."""
        if realm is not None:
            self._realm(realm)
        if not self._clustered or self.forward is None or self.nodes is None:
            return self.process_here("list", None, realm)

        def gather(nodes: list[dict]) -> Any:
            asks = [defer.maybeDeferred(self.forward, n["id"], "list", None, [realm]).addCallback(
                lambda found, node=n["id"]: [{**p, "node": node} for p in found]) for n in nodes]
            return defer.gatherResults(asks, consumeErrors=True).addCallback(
                lambda lists: [p for found in lists for p in found][:MAX_LISTED])

        return defer.maybeDeferred(self.nodes).addCallback(gather)

    def process_start(self, session_id: int, arg: Any = None) -> Any:
        """Start the session's process with the realm's class; False: it has one already."""
        return self._where("start", session_id, arg)

    def process_started(self, session_id: int) -> Any:
        return self._where("started", session_id)

    def process_call(self, session_id: int, request: Any = None, timeout: float | None = None) -> Any:
        """A Deferred: what the process answers (or its error)."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout <= 3600):
            raise AdminError(INVALID_ARGUMENT, "timeout must be a number of seconds in (0, 3600]")
        return self._where("call", session_id, request, timeout)

    def process_cast(self, session_id: int, request: Any = None) -> Any:
        return self._where("cast", session_id, request)

    def process_terminate(self, session_id: int) -> Any:
        """End the session's process (the session stays); False: it had none."""
        return self._where("terminate", session_id)

    # -- realms ----------------------------------------------------------------------------------
    def _realm(self, uri: Any):
        realm = self.registry.get(_need(uri, str, "realm"))
        if realm is None:
            raise AdminError(NO_SUCH_REALM, f"no realm {_short(uri)}")
        return realm

    def realm_list(self) -> list[str]:
        return sorted(r.uri for r in self.registry.list())

    def realm_get(self, uri: str) -> dict:
        realm = self._realm(uri)
        definition = {k: v for k, v in realm.definition.items() if k != "users"}
        definition["uri"] = realm.uri
        definition["users"] = sorted(realm.users)
        definition["sessions"] = self.sessions.size(realm.uri)
        definition["policy"] = _policy(realm)  # what it runs with, defaults included
        return definition

    def realm_create(self, uri: str, definition: dict | None = None) -> dict:
        self._uri(uri, "realm")  # one a client could name in HELLO
        if uri in self.registry:
            raise AdminError(REALM_EXISTS, f"realm {_short(uri)} exists")
        raw = dict(_need(definition or {}, dict, "definition"), uri=uri)
        if "users" in raw:
            raise AdminError(INVALID_ARGUMENT, "users are added through courtyard.user.add, not in a definition")
        realm = self._checked(parse_realm(raw, "definition"), "definition")
        return _then(self.store.save_realm(uri, raw),  # recorded first: a change the store cannot take is not made
                     lambda: self._put(realm) or self.realm_get(uri))

    def _put(self, realm) -> None:
        """Install a realm definition, replacing the one under its URI (a cluster node may have had
        it from Redis already)."""
        if realm.uri in self.registry:
            self.registry.remove(realm.uri)
        self.registry.add(realm)

    def _checked(self, realm, path: str):
        """The realm, if it can work (realms/checks.py, as check-config does); else invalid_argument."""
        errors = check_realm(realm, path, self.max_uri_length)[0]
        if errors:
            raise _errors(errors)
        return realm

    def realm_update(self, uri: str, changes: dict) -> dict:
        """Replace the given top-level keys (auth, roles, limits) of a realm's definition."""
        realm = self._realm(uri)
        _need(changes, dict, "changes")
        if "uri" in changes or "users" in changes:
            raise AdminError(INVALID_ARGUMENT, "a realm's uri cannot change; users change through courtyard.user.*")
        updated = self._checked(apply_changes(realm, changes, "changes"), "changes")
        return _then(self.store.update_realm(uri, changes),  # only these keys: the rest still comes from the YAML
                     lambda: self._put(updated) or self.realm_get(uri))

    def realm_delete(self, uri: str) -> int:
        """Close the realm's sessions (GOODBYE courtyard.close.realm_deleted), then forget it."""
        realm = self._realm(uri)
        if realm.uri == self.admin_realm:
            raise AdminError(INVALID_ARGUMENT, "the admin realm cannot be deleted")
        return _then(self.store.save_realm(realm.uri, None), lambda: self._delete(realm.uri))

    def _delete(self, uri: str) -> int:
        killed = self._kill(self.sessions.list(uri), REALM_DELETED, "the realm was deleted")
        if uri in self.registry:
            self.registry.remove(uri)
        self.drop_realm(uri)
        return killed

    # -- sessions --------------------------------------------------------------------------------
    # In a cluster (`sessions.clustered`) count, list, get, activity and the kills see every node's
    # sessions and answer later (Deferreds from Redis); `idle` of another node's session is as of its
    # last activity write (cluster.activity_interval). set_data changes this node's sessions only.
    @property
    def _clustered(self) -> bool:
        return bool(getattr(self.sessions, "clustered", False))

    def session_count(self, realm: str | None = None) -> Any:
        if realm is not None:
            self._realm(realm)
        if self._clustered:
            return self.sessions.cluster_size(realm)
        return self.sessions.size(realm)

    def session_list(self, realm: str | None = None, authid: str | None = None, authrole: str | None = None,
                     dt: float | None = None) -> Any:
        if dt is not None:
            _need(dt, (int, float), "dt")
        if self._clustered:
            return self.sessions.cluster_list(realm, authid=authid, authrole=authrole).addCallback(
                lambda found: [d["session"] for d in found if dt is None or d["idle"] <= dt])
        return [s.id for s in self.sessions.list(realm, authid=authid, authrole=authrole, active_within=dt)]

    def _session(self, session_id: Any):
        session = self.sessions.lookup(_need(session_id, int, "session id"))
        if session is None:
            raise AdminError(NO_SUCH_SESSION, f"no session {session_id}")
        return session

    def _anywhere(self, session_id: Any) -> Any:
        """Deferred[dict]: the details of a session on any node of the cluster, or AdminError."""
        def found(details: dict | None) -> dict:
            if details is None:
                raise AdminError(NO_SUCH_SESSION, f"no session {session_id}")
            return details

        return self.sessions.cluster_details(_need(session_id, int, "session id")).addCallback(found)

    def session_get(self, session_id: int) -> Any:
        if self._clustered and self.sessions.lookup(_need(session_id, int, "session id")) is None:
            return self._anywhere(session_id)
        return self._session(session_id).to_details_map()

    def _kill(self, sessions: list, reason: str, message: str | None) -> int:
        for s in sessions:
            self.sessions.kill(s.id, reason, message)
        return len(sessions)

    def _uri(self, uri: Any, what: str) -> str:
        """A URI (loose rules: no spaces, no '#', no empty component) of at most limits.max_uri_length characters."""
        _need(uri, str, what)
        if len(uri) > self.max_uri_length or not is_loose_uri(uri):
            raise AdminError(INVALID_URI, f"{what} must be a URI of at most {self.max_uri_length} characters, "
                                          f"not {_short(uri)}")
        return uri

    def _reason(self, reason: Any) -> str:
        """A GOODBYE reason: a URI, at most limits.max_uri_length characters."""
        return self._uri(reason, "reason")

    def session_kill(self, session_id: int, reason: str = KILLED, message: str | None = None) -> Any:
        reason = self._reason(reason)
        if self._clustered and self.sessions.lookup(_need(session_id, int, "session id")) is None:
            return self._anywhere(session_id).addCallback(
                lambda d: self.sessions.cluster_kill([d], reason, message)).addCallback(lambda _: None)
        self._kill([self._session(session_id)], reason, message)

    def session_kill_by_authid(self, realm: str, authid: str, reason: str = KILLED, message: str | None = None) -> Any:
        self._realm(realm)
        _need(authid, str, "authid")
        reason = self._reason(reason)
        if self._clustered:
            return self.sessions.cluster_list(realm, authid=authid).addCallback(
                self.sessions.cluster_kill, reason, message)
        return self._kill(self.sessions.list(realm, authid=authid), reason, message)

    def session_kill_all(self, realm: str, reason: str = KILLED, message: str | None = None) -> Any:
        self._realm(realm)
        reason = self._reason(reason)
        if self._clustered:
            return self.sessions.cluster_list(realm).addCallback(self.sessions.cluster_kill, reason, message)
        return self._kill(self.sessions.list(realm), reason, message)

    def session_activity(self, realm: str, dt: float) -> Any:
        self._realm(realm)
        _need(dt, (int, float), "dt")
        if self._clustered:
            return self.sessions.cluster_list(realm).addCallback(
                lambda found: len({d["authid"] for d in found if d["idle"] < dt}))
        return self.sessions.activity(realm, dt)

    def session_wipe(self) -> int:
        return self.wipe_expired()

    def session_set_data(self, session_id: int, data: dict) -> dict:
        """Merge attributes: string/number/bool values; null deletes a key; keys not given stay."""
        session = self._session(session_id)
        _need(data, dict, "data")
        merged = dict(session.data or {})
        for key, value in data.items():
            if value is None:
                merged.pop(key, None)
            elif isinstance(value, (str, int, float, bool)):
                merged[key] = value
            else:
                raise AdminError(INVALID_ARGUMENT, f"data[{_short(key)}] must be a string, number, bool or null")
        self.sessions.update(session.id, data=merged)
        return merged

    # -- users -----------------------------------------------------------------------------------
    def _user(self, realm: str, authid: Any):
        r = self._realm(realm)
        user = r.users.get(_need(authid, str, "authid"))
        if user is None:
            raise AdminError(NO_SUCH_USER, f"no user {_short(authid)} in realm {_short(realm)}")
        return r, user

    def user_list(self, realm: str) -> list[str]:
        return sorted(self._realm(realm).users)

    def user_get(self, realm: str, authid: str) -> dict:
        return self._user(realm, authid)[1].public()

    @staticmethod
    def _definition(role: str | None, ticket: str | None, wampcra: Any, cryptosign: Any, base: dict) -> dict:
        """A stored user definition: a plain `ticket` given here is hashed before it is kept anywhere."""
        d = dict(base)
        if role is not None:
            d["role"] = _need(role, str, "role")
        if ticket is not None:
            d["ticket"] = hash_secret(_need(ticket, str, "ticket"))
        if wampcra is not None:
            d["wampcra"] = _cra(wampcra)
        if cryptosign is not None:
            d["cryptosign"] = cryptosign
        return d

    def user_add(self, realm: str, authid: str, role: str, ticket: str | None = None, wampcra: Any = None,
                 cryptosign: Any = None) -> dict:
        r = self._realm(realm)
        if _need(authid, str, "authid") in r.users:
            raise AdminError(USER_EXISTS, f"user {_short(authid)} exists in realm {_short(realm)}")
        raw = self._definition(role, ticket, wampcra, cryptosign, {})
        user = self._checked_user(r, parse_user(authid, raw, "user"))
        return _then(self.store.save_user(realm, authid, raw), lambda: self._set_user(realm, r, user))

    def _set_user(self, uri: str, realm, user) -> dict:
        """The user goes into the realm as it is now (in a cluster, Redis's answer may come after the
        realm was replaced by a newer definition)."""
        (self.registry.get(uri) or realm).users[user.authid] = user
        return user.public()

    def user_update(self, realm: str, authid: str, role: str | None = None, ticket: str | None = None,
                    wampcra: Any = None, cryptosign: Any = None) -> dict:
        r, user = self._user(realm, authid)
        base = {"role": user.role, "cryptosign": list(user.cryptosign)}
        if user.ticket:
            base["ticket"] = user.ticket
        if user.wampcra:  # an unsalted secret from the YAML is kept salted from now on
            c = user.wampcra
            base["wampcra"] = salted_cra(c.key) if c.salt is None else {
                "key": c.key, "salt": c.salt, "iterations": c.iterations, "keylen": c.keylen}
        raw = self._definition(role, ticket, wampcra, cryptosign, base)
        updated = self._checked_user(r, parse_user(authid, raw, "user"))
        return _then(self.store.save_user(realm, authid, raw), lambda: self._set_user(realm, r, updated))

    @staticmethod
    def _checked_user(realm, user):
        """The user, if it can log in to this realm and has a role there; else invalid_argument."""
        errors = check_user(realm, user, "user")
        if errors:
            raise _errors(errors)
        return user

    def user_remove(self, realm: str, authid: str) -> int:
        """Forget the user and close its sessions (GOODBYE courtyard.close.user_removed)."""
        r, user = self._user(realm, authid)
        return _then(self.store.save_user(realm, authid, None), lambda: self._remove_user(realm, r, authid))

    def _remove_user(self, uri: str, realm, authid: str) -> int:
        (self.registry.get(uri) or realm).users.pop(authid, None)
        return self._kill(self.sessions.list(uri, authid=authid), USER_REMOVED, "the user was removed")
