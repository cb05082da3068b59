"""SIGHUP: reload without dropping connections, as nginx and Redis do.

A reload reopens `--log-file` (after logrotate moved it away), then reads the config file again and
checks it exactly as `courtyard check-config` does (router/config.py `load`, the admin changes laid
over it, every realm checked). A config with errors is refused, one log line per error, and the node
goes on with the one it runs. A good one is applied in place:

- TLS: every listener's certificate and key are read again (renewed files under the same path, or new
  paths); connections made after the reload get the new certificate, open ones keep theirs;
- realms, roles, users and auth settings: new realms are served at once; a realm gone from the file
  is deleted (its sessions get GOODBYE `courtyard.close.realm_deleted`); in a changed realm, sessions
  keep running under their role's new permissions, and only those whose user or role is gone are
  closed (`courtyard.close.user_removed`, `courtyard.close.role_removed`);
- `admin.users`: in a cluster, published to the other nodes, which take them too
  (router/cluster/adminusers.py: the most recently loaded definition of an authid wins);
- limits, `http:`, `node.name`, `shutdown.grace_period`, `node.sweep_interval`.

SIGUSR1 writes one line of the node's state to the log (sessions, connections, realms, admission
refusals, reloads, uptime).

What needs a restart (a listener's address, type or transport settings, `cluster:`, `storage:`,
`node.workers`, `admin.realm`, `admin.data_dir`) is logged as such and left as it runs.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Any

from twisted.internet import reactor
from twisted.logger import Logger

from realms.admin import REALM_DELETED, USER_REMOVED
from realms.checks import check_realm
from realms.realm import Realm
from realms.registry import RealmRegistry
from realms.schema import ConfigError
from router import logs, systemd, wamp
from router.config import NodeConfig, load, warnings

ROLE_REMOVED = "courtyard.close.role_removed"  # GOODBYE reason: a reload removed the session's role
log = Logger()

# NodeConfig fields a running node keeps until it restarts (listeners are compared one by one).
RESTART_FIELDS = ("storage", "workers", "data_dir")


def _restart_needed(old: NodeConfig, new: NodeConfig) -> list[str]:
    """The keys whose new value takes a restart, with what changed."""
    found = []
    if len(old.listeners) != len(new.listeners):
        found.append(f"listeners: {len(old.listeners)} listener(s) now, {len(new.listeners)} in the file")
    for i, (a, b) in enumerate(zip(old.listeners, new.listeners, strict=False)):
        if dataclasses.replace(a, tls=None) != dataclasses.replace(b, tls=None) or (a.tls is None) != (b.tls is None):
            found.append(f"listeners[{i}]")
    if old.cluster is None or new.cluster is None:
        if (old.cluster is None) != (new.cluster is None):
            found.append("cluster")
    elif dataclasses.replace(old.cluster, node_id="") != dataclasses.replace(new.cluster, node_id=""):
        found.append("cluster")
    found.extend(f"{key}" for key in RESTART_FIELDS if getattr(old, key) != getattr(new, key))
    if old.admin_realm.uri != new.admin_realm.uri:
        found.append("admin.realm")
    return found


class Reloader:
    """Reloads one node from its config file; `install` makes SIGHUP call it."""

    def __init__(self, node: Any, path: str | None, workers: int | None = None, notify: bool = True) -> None:
        self.node = node
        self.path = path
        self.workers = workers
        self.notify = notify  # tell systemd (not a worker: its supervisor is the service's main process)
        self.reloads = 0  # reloads applied (a refused one does not count)

    def install(self) -> None:
        """SIGHUP reloads (its default would end the process). The handler only schedules: the reload
        runs in the reactor's thread, between two events, like any other."""
        signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(self.reload))
        signal.signal(signal.SIGUSR1, lambda signum, frame: reactor.callFromThread(self.summary))

    def summary(self) -> str:
        """SIGUSR1: one line of the node's state in the log (what `courtyard status` shows, and more)."""
        node = self.node
        routers = node.realm_routers()
        realms = ", ".join(f"{r.uri} {node.table.size(r.uri)}" for r in node.realms.list())
        refused = {reason: n for (realm, reason), n in node.stats.refusals.items() if realm == ""}
        line = (f"state: {node.table.size()} session(s), {node.connections} connection(s); realms (sessions): "
                f"{realms}; pending calls {sum(r.dealer.pending() for r in routers.values())}; "
                f"admission refusals {refused or 'none'}; {self.reloads} reload(s) applied; "
                f"uptime {time.time() - node.stats.started:.0f}s")
        log.info("{line}", line=line)
        return line

    def reload(self) -> bool:
        """Reopen the log, then read, check and apply the config. False: refused, nothing changed."""
        if self.notify:
            systemd.notify("RELOADING=1", systemd.monotonic_usec())
        try:
            return self._reload()
        except Exception:  # a bug, but the node must not die of a SIGHUP: said, and it runs on
            log.failure("reload failed part way; restart the node to be sure of its config")
            return False
        finally:
            if self.notify:
                systemd.notify("READY=1", f"STATUS=serving; {self.reloads} reload(s)")

    def _reload(self) -> bool:
        try:
            reopened = logs.reopen()
        except OSError as e:
            log.error("reload: cannot reopen the log file: {e}; still writing to the old one", e=e.strerror)
        else:
            if reopened is not None:
                log.info("reload: log file {path} reopened", path=reopened)
        where = self.path or "the embedded default config"
        if self.path is None:
            log.info("reload: no config file (-c) to read again; nothing else reloaded")
            return False
        errors, cfg, registry = self._check()
        if errors:
            for error in errors:
                log.error("reload refused: {error}", error=str(error))
            log.error("reload refused: {n} error(s) in {path}; still running on the previous config",
                      n=len(errors), path=where)
            return False
        for warning in warnings(cfg):
            log.warn("reload: warning: {warning}", warning=warning)
        node = self.node
        restart = _restart_needed(node.config, cfg)
        tls = self._apply_tls(cfg)
        self._apply_settings(cfg)
        changed = self._apply_realms(cfg, registry)
        logs.set_node(node.config.cluster.node_id if node.config.cluster is not None else node.config.name)
        self.reloads += 1
        log.info("reloaded {path}: realms {realms}{changed}; {tls} TLS listener(s) with their certificates read "
                 "again", path=where, realms=", ".join(r.uri for r in node.realms.list()),
                 changed=f" ({changed})" if changed else "", tls=tls)
        for key in restart:
            log.warn("reload: {key} changed in the file: takes effect only after a restart", key=key)
        return True

    def _check(self) -> tuple[list, Any, Any]:
        """(errors, config, realms as the node would run them) — check-config's checks."""
        try:
            cfg = load(self.path, self.workers)
        except ConfigError as e:
            return list(getattr(e, "errors", [e])), None, None
        if cfg.cluster is not None:  # the admin changes are the cluster's, laid over in _apply_realms
            return [], cfg, None
        registry = RealmRegistry([*cfg.realms, cfg.admin_realm])
        store = self.node.store
        if store is not None:
            try:
                store.apply(registry)
            except Exception as e:  # StoreError: the admin database cannot be read
                return [e], cfg, None
        for realm in registry.list():  # as check-config: what the admin changes make of it, said
            for error in check_realm(realm, f"realm {realm.uri} (with the admin changes)", cfg.max_uri_length)[0]:
                log.warn("reload: warning: {e}", e=str(error))
        return [], cfg, registry

    def _apply_tls(self, cfg: NodeConfig) -> int:
        """Swap each TLS listener's credentials for the files just read (load checked them)."""
        n = 0
        for old, new in zip(self.node.config.listeners, cfg.listeners, strict=False):
            if old.tls is not None and new.tls is not None and old.tls.live is not None:
                old.tls.live.options = new.tls.options
                old.tls.options = new.tls.options
                old.tls.certificate, old.tls.key = new.tls.certificate, new.tls.key
                old.tls.ca_certificates, old.tls.ciphers = new.tls.ca_certificates, new.tls.ciphers
                n += 1
        return n

    def _apply_settings(self, cfg: NodeConfig) -> None:
        """Limits and node settings: the new config, minus what takes a restart."""
        node, old = self.node, self.node.config
        keep = {key: getattr(old, key) for key in (*RESTART_FIELDS, "listeners", "cluster")}
        if old.admin_realm.uri != cfg.admin_realm.uri:
            keep["admin_realm"] = old.admin_realm
        node.config = dataclasses.replace(cfg, **keep)
        wamp.set_max_uri_length(cfg.max_uri_length)
        node.table.max_sessions = cfg.max_sessions
        node.table.reserves[node.config.admin_realm.uri] = cfg.admin_reserve
        for router in node.realm_routers().values():
            router.broker.max_retained_bytes = cfg.max_retained_bytes
            router.broker.max_subscriptions = cfg.max_subscriptions_per_session
            router.dealer.max_pending_calls = cfg.max_pending_calls
            router.dealer.max_registrations = cfg.max_registrations_per_session
        admin = getattr(node, "admin", None)
        if admin is not None:
            admin.max_uri_length = cfg.max_uri_length
        sweeper = getattr(node, "_sweeper", None)
        if sweeper is not None and sweeper.running and sweeper.interval != cfg.sweep_interval:
            sweeper.stop()
            sweeper.start(cfg.sweep_interval, now=False)
        admission = getattr(node, "admission", None)
        if admission is not None:
            admission.configure(cfg)

    def _apply_realms(self, cfg: NodeConfig, registry: RealmRegistry | None) -> str:
        node = self.node
        if registry is None:  # a cluster: the YAML is each node's base layer under Redis's records
            base = getattr(node, "_base", None)
            if base is not None and node.store is not None:
                admin = node.config.admin_realm
                if getattr(node, "admin_users", None) is not None:  # the cluster-wide set, these users in it
                    admin = dataclasses.replace(admin, users=node.admin_users.load(admin.users))
                base.clear()
                base.update({r.uri: dataclasses.replace(r, users=dict(r.users)) for r in [*cfg.realms, admin]})
                node.store.reload()
            return "realms read again over the cluster's realm store"
        current = {r.uri: r for r in node.realms.list()}
        wanted = {r.uri: r for r in registry.list()}
        added = [u for u in wanted if u not in current]
        removed = [u for u in current if u not in wanted]
        changed = [u for u in wanted if u in current and wanted[u] != current[u]]
        for uri in removed:
            sessions = node.table.list(uri)
            for s in sessions:
                node.table.kill(s.id, REALM_DELETED, "the realm was removed from the config")
            node.realms.remove(uri)
            node.drop_realm(uri)
        for uri in added:
            node.realms.add(wanted[uri])
        for uri in changed:
            _replace(node, current[uri], wanted[uri])
        return ", ".join(f"{what}: {', '.join(uris)}" for what, uris in
                         (("added", added), ("removed", removed), ("changed", changed)) if uris)


def _replace(node: Any, old: Realm, new: Realm) -> None:
    """A changed realm: installed for new sessions and, for open ones, their role's new permissions;
    sessions whose user or role is gone are closed."""
    node.realms.remove(old.uri)
    node.realms.add(new)
    router = node.realm_routers().get(new.uri)
    if router is not None:
        router.spec = new
    gone_users = old.users.keys() - new.users.keys()
    for s in node.table.list(new.uri):
        if s.authid in gone_users and s.authmethod != "anonymous":
            node.table.kill(s.id, USER_REMOVED, "the user was removed from the config")
            continue
        if new.roles is None:
            s.authorizer = None
            continue
        role = new.roles.get(s.authrole)
        if role is None:
            node.table.kill(s.id, ROLE_REMOVED, f"role {s.authrole!r} was removed from the config")
        else:
            s.authorizer = None if role.allows_everything() else role

