"""RPC across the nodes of a cluster (issue 13, point 2): registrations are cluster-wide and atomic
(router/cluster/registry.py), and a CALL whose picked callee is on another node is forwarded there once.

The caller's node picks the callee over every node's callees (the registration's policy), then sends the
CALL with the caller's identity to the callee's node. That node makes a **stand-in** caller Session whose
transport relays what its dealer sends the caller (RESULT, ERROR: they carry the caller's own request id)
back over the bus, and runs its own dealer for it: INVOCATION, timeouts, progressive results and
invocations, canceling, disclosure and passthru are the one-node code. The caller's node keeps the call in
the caller's table of calls in flight (dealer.RemoteCall), so that further progressive CALLs and CANCEL
follow it, until the final RESULT or ERROR comes back.

Failure: a bus message that cannot be sent fails the call at once (`wamp.error.canceled`); a callee's node
that dies fails its pending callers (`wamp.error.canceled`, when the node is seen dead); a caller that
leaves, or whose node dies, has its stand-in detached, so callees that announced call_canceling get
INTERRUPT.
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from router import wamp
from router.cluster import purge
from router.cluster.connection import ClusterUnavailable, connected
from router.cluster.membership import MAX_NODES, NODES
from router.cluster.outbox import refusal
from router.cluster.registry import (
    ADD,
    COUNTER,
    MAX_SNAPSHOT,
    REALMS,
    REG_KIND,
    REMOVE,
    SNAPSHOT,
    Entry,
    View,
    callee_id,
    decode_change,
    field,
    node_key,
    realm_key,
)
from router.dealer import Callee, Dealer, Registration, RemoteCall
from router.session import Session

# To the callee's node: [realm, caller id, authid, authrole, caller features, match, pattern, callee id, CALL].
CALL = "rpc.call"
MORE = "rpc.more"  # a further progressive CALL: [caller id, CALL]
CANCEL = "rpc.cancel"  # [caller id, CANCEL]
GONE = "rpc.gone"  # the caller left: [caller id]
ANSWER = "rpc.answer"  # to the caller's node: [caller id, RESULT or ERROR, bulk]
SYNC = "rpc.sync"  # to this node itself: [token]; back once every earlier broadcast is
SEEN = "rpc.seen"  # a request to another node: answered at once (see seen_everywhere)
SEEN_TIMEOUT = 1.0  # seconds a REGISTER waits at most for a node that does not answer
MAX_SYNCS = 1_000  # CALLs waiting for their node to catch up with Redis; more are answered at once
SYNC_TIMEOUT = 1.0  # seconds a CALL waits for that at most
UNREACHABLE = "the callee's node cannot be reached"
MAX_STAND_INS = 100_000  # callers of other nodes with calls in flight here
NODE_BATCH = 10_000  # entries a dead or leaving node's cleanup handles per script

if node_key not in purge.NODE_KEYS:
    purge.NODE_KEYS.append(node_key)


_META = ["meta"]  # what a meta API call waits as, for ClusterRPC.sync (never a CALL being routed again)


def _nothing() -> None:
    """An answer that cannot reach the caller's node: that node fails the call when it sees this one gone."""


class _Relay:
    """A stand-in caller's transport: what the dealer sends the caller goes back to the caller's node."""

    __slots__ = ("rpc", "node", "session")

    def __init__(self, rpc: ClusterRPC, node: str) -> None:
        self.rpc = rpc
        self.node = node
        self.session: Session | None = None

    def send(self, msg: list, bulk: bool = False) -> str | None:
        session = self.session
        outbox = self.rpc.outbox
        queued = outbox.send(self.node, ANSWER, [session.id, msg, bulk], _nothing)
        if msg[0] != wamp.RESULT or not msg[2].get("progress"):
            self.rpc.release(session)  # a final answer: drop the stand-in if it has nothing else in flight
            if not queued:  # too large to cross: a short ERROR in its place, as WampProtocol.send does
                request = msg[1] if msg[0] == wamp.RESULT else msg[2]
                uri, why = refusal(outbox.refused, "the answer could not be sent to the caller's node")
                outbox.send(self.node, ANSWER, [session.id, wamp.error(wamp.CALL, request, uri, [why]), False],
                            _nothing)
                outbox.refused = None
        # The caller unreachable (Redis away, too large): the dealer ends the call as for a slow caller.
        return None if queued else wamp.CANCELED

    def send_prepared(self, frame: Any) -> None:
        """Stand-ins subscribe to nothing."""

    def close(self, reason: str = "", message: str | None = None) -> None:
        """The caller's own node ends its session."""


class RealmRPC:
    """One realm's dealer in the cluster (its `dealer.cluster`): routes CALLs over every node's callees,
    sends REGISTER and UNREGISTER through Redis, answers the registration meta API for the cluster."""

    def __init__(self, rpc: ClusterRPC, router: Any) -> None:
        self.rpc = rpc
        self.router = router
        self.uri = router.uri
        self.dealer: Dealer = router.dealer
        self.node_id = rpc.node_id
        self.registering: dict[int, int] = {}  # session id → its REGISTERs in Redis, not answered yet

    # -- CALL --------------------------------------------------------------------------------------
    def route(self, session: Session, msg: list) -> Any:
        """True: forwarded to another node; (reg, callee): a callee of this node; None: not in the cluster."""
        index = self.rpc.view.indexes.get(self.uri)
        if index is None:
            return None
        procedure = msg[3]
        entry = index.exact.get(procedure)
        if entry is None:
            if len(index) == len(index.exact) or wamp.is_reserved(procedure):
                return None
            entry = index.best(procedure)
            if entry is None:
                return None
        node, sid = entry.pick()
        if node == self.node_id:
            reg = self.dealer.lookup(entry.procedure, entry.match)
            if reg is None:
                return None
            for c in reg.callees:
                if c.session.id == sid:
                    return reg, c
            return reg, reg.pick()
        self._forward_call(session, msg, entry, node, sid)
        return True

    def _forward_call(self, session: Session, msg: list, entry: Entry, node: str, sid: int) -> None:
        options = msg[2]
        call = RemoteCall(node, session, msg[1], bool(options) and options.get("progress") is True)
        calls = self.dealer._calls.get(session.id)
        if calls is None:
            calls = self.dealer._calls[session.id] = {}
        calls[msg[1]] = call
        roles = session.roles
        features = roles.get("caller") if type(roles) is dict else None
        self.rpc.send(node, CALL, [self.uri, session.id, session.authid, session.authrole, features, entry.match,
                                   entry.procedure, sid, msg], lambda: self.fail(call, UNREACHABLE))

    def forward(self, call: RemoteCall, msg: list) -> None:
        """A further progressive CALL of a forwarded call."""
        self.rpc.send(call.node, MORE, [call.caller.id, msg], lambda: self.fail(call, UNREACHABLE))

    def cancel(self, call: RemoteCall, msg: list) -> None:
        """CANCEL of a forwarded call: the callee's node cancels it (its dealer answers, by mode)."""
        self.rpc.send(call.node, CANCEL, [call.caller.id, msg], lambda: self.fail(call, "the call was canceled"))

    def caller_left(self, call: RemoteCall) -> None:
        self.rpc.send(call.node, GONE, [call.caller.id], lambda: None)

    def unknown(self, session: Session, msg: list) -> bool:
        """A CALL that matches no registration of the view: another node may have registered it just
        before (its REGISTERED reached the caller before the broadcast reached this node). True: the CALL
        is routed again once this node's bus has caught up with Redis (one round trip), only then may it
        be answered wamp.error.no_such_procedure. Only misses pay for this."""
        return self.rpc.sync(lambda: self._again(session, msg), msg)

    def synced(self) -> defer.Deferred:
        """Fires once this node has every registration made before now (the meta API answers then, so
        that a registration another node has just confirmed is listed)."""
        d: defer.Deferred = defer.Deferred()
        if not self.rpc.sync(lambda: d.callback(None), _META):
            d.callback(None)
        return d

    def _again(self, session: Session, msg: list) -> None:
        if self.rpc.table.lookup(session.id) is not session:
            return
        calls = self.dealer._calls.get(session.id)
        if calls is not None and msg[1] in calls:
            return  # the caller reused the request id meanwhile: the later CALL wins
        self.rpc.again = msg
        try:
            self.dealer.call(session, msg)
        except wamp.ProtocolViolation as e:
            session.transport.abort(wamp.PROTOCOL_VIOLATION, str(e))
        finally:
            self.rpc.again = None

    def fail(self, call: RemoteCall, why: str) -> None:
        """The caller hears wamp.error.canceled (payload_size_exceeded or invalid_argument if the CALL
        could not cross), unless its call is over already."""
        if self.dealer.forget_remote(call):
            uri, why = refusal(self.rpc.outbox.refused, why)
            call.caller.transport.send(wamp.error(wamp.CALL, call.call_id, uri, [why]))

    # -- REGISTER / UNREGISTER ---------------------------------------------------------------------
    def register(self, session: Session, request: int, procedure: str, match: str, invoke: str,
                 options: dict) -> None:
        rpc = self.rpc
        if not connected(rpc.redis):
            e = ClusterUnavailable()
            session.transport.send(wamp.error(wamp.REGISTER, request, e.uri, [e.message]))
            return
        fld = field(procedure, match)
        me = callee_id(self.node_id, session.id)
        d = rpc.eval(ADD, [realm_key(self.uri), COUNTER, node_key(self.node_id), REALMS],
                     [self.node_id, self.uri, fld, invoke, self.dealer._new_id(), repr(time.time()), me, ""])
        self.registering[session.id] = self.registering.get(session.id, 0) + 1

        def answered(result: Any) -> Any:
            n = self.registering.pop(session.id, 1) - 1
            if n:
                self.registering[session.id] = n
            return result

        def done(reply: list) -> Any:
            uri, raw, created = reply
            if uri:
                if rpc.table.lookup(session.id) is session:
                    session.transport.send(wamp.error(wamp.REGISTER, request, uri, [
                        f"procedure {wamp.quote(procedure)} is already registered"
                        if uri == wamp.PROCEDURE_ALREADY_EXISTS
                        else f"{wamp.quote(procedure)} is registered with another invocation policy, not {invoke!r}"]))
                return None
            rpc.apply(self.uri, fld, raw)
            # REGISTERED once every other node has it too, so a CALL made next on any node finds it.
            return rpc.seen_everywhere().addCallback(lambda _: complete(int(json.loads(raw)["id"]), bool(created)))

        def complete(reg_id: int, created: bool) -> None:
            if rpc.table.lookup(session.id) is not session:  # it left meanwhile
                rpc.remove(self.node_id, [(self.uri, fld, me)]).addErrback(
                    rpc.log_failure, "removing the registration of a session that left")
                return
            reg = self.dealer.add(session, request, procedure, match, invoke, options, reg_id, created,
                                  in_cluster=True)
            entry = rpc.view.indexes.get(self.uri)
            entry = entry.get(procedure, match) if entry is not None else None
            reg.clustered = entry is not None and entry.elsewhere(self.node_id)

        def failed(f: Failure) -> None:
            rpc.log.warn("registering {procedure} in Redis failed: {e}", procedure=wamp.quote(procedure),
                         e=f.getErrorMessage())
            if rpc.table.lookup(session.id) is session:
                e = ClusterUnavailable()
                session.transport.send(wamp.error(wamp.REGISTER, request, e.uri, [e.message]))

        d.addCallbacks(done, failed).addBoth(answered).addErrback(rpc.log_failure, "completing a REGISTER")

    def unregistered(self, session: Session, reg: Registration) -> None:
        """A callee of this node left the registration (UNREGISTER, or it left): out of Redis, then the
        meta events (on_delete only if the registration is gone from the whole cluster)."""
        rpc = self.rpc
        rpc.view.drop_callee(self.uri, reg.procedure, reg.match, self.node_id, session.id)
        listener = self.dealer.listener
        d = rpc.remove(self.node_id, [(self.uri, field(reg.procedure, reg.match), callee_id(self.node_id, session.id))])

        def done(reply: tuple[int, list]) -> None:
            if listener is not None:
                listener.unregistered(session.id, reg, any(not after for _, _, _, after, _, _ in reply[1]))

        def failed(f: Failure) -> None:  # Redis is away: resync takes it out later
            if listener is not None:
                listener.unregistered(session.id, reg, not reg.callees)

        d.addCallbacks(done, failed).addErrback(rpc.log_failure, "completing an UNREGISTER")

    def changed(self, procedure: str, match: str, entry: Entry | None) -> None:
        """The view changed: a local registration routes over the cluster when others share it."""
        reg = self.dealer.lookup(procedure, match)
        if reg is not None and reg.in_cluster:
            reg.clustered = entry is not None and entry.elsewhere(self.node_id)

    # -- meta API: the whole cluster ---------------------------------------------------------------
    def registrations(self) -> list:
        return [*self.rpc.view.entries(self.uri), *(r for r in self.dealer.registrations() if not r.in_cluster)]

    def registration(self, reg_id: int) -> Any:
        entry = self.rpc.view.by_id.get(self.uri, {}).get(reg_id)
        if entry is not None:
            return entry
        reg = self.dealer.registration(reg_id)
        return reg if reg is not None and not reg.in_cluster else None

    def lookup(self, procedure: str, match: str) -> Any:
        index = self.rpc.view.indexes.get(self.uri)
        entry = index.get(procedure, match) if index is not None else None
        return entry if entry is not None else self.dealer.lookup(procedure, match)

    def match(self, procedure: str) -> Any:
        reg = self.dealer._exact.get(procedure)
        if reg is not None and not reg.in_cluster:
            return reg
        index = self.rpc.view.indexes.get(self.uri)
        entry = index.best(procedure) if index is not None and not wamp.is_reserved(procedure) else None
        return entry if entry is not None else self.dealer.match(procedure)


class ClusterRPC:
    """The cluster part (router/cluster/part.py) for registrations and calls across nodes."""

    log = Logger()

    def __init__(self, redis: Any, bus: Any, node_id: str, table: Any) -> None:
        self.redis = redis
        self.bus = bus
        self.node_id = node_id
        self.table = table
        self.view = View(self._changed)
        self.realms: dict[str, RealmRPC] = {}
        self.stand_ins: dict[tuple[str, int], Session] = {}
        self.again: list | None = None  # the CALL being routed a second time (RealmRPC.unknown)
        self._syncs: dict[int, Any] = {}
        self._sync_ids = 0
        bus.on(SYNC, self._synced)
        bus.on(SEEN, lambda sender, body: True)  # a request: answered once every earlier broadcast is applied
        bus.on(REG_KIND, self._reg_changed)
        self.outbox = bus.outbox
        self.outbox.on(CALL, self._call_here)
        self.outbox.on(MORE, self._more_here)
        self.outbox.on(CANCEL, self._cancel_here)
        self.outbox.on(GONE, self._gone_here)
        self.outbox.on(ANSWER, self._answer_here)

    # -- the part's protocol -----------------------------------------------------------------------
    def start(self) -> defer.Deferred:
        return self.reload()

    def realm_started(self, router: Any) -> None:
        rr = self.realms[router.uri] = RealmRPC(self, router)
        router.dealer.cluster = rr

    def node_down(self, node_id: str) -> None:
        """Its callees leave the view now; its callers' stand-ins are detached (INTERRUPT to callees
        that understand it); calls forwarded to it fail; its registrations leave Redis."""
        self.view.drop_node(node_id)
        for rr in list(self.realms.values()):
            for call in rr.dealer.remote_calls():
                if call.node == node_id:
                    rr.fail(call, "the callee's node is gone")
        for key in [k for k in self.stand_ins if k[0] == node_id]:
            stand_in = self.stand_ins.pop(key)
            stand_in.realm.dealer.detach(stand_in)
        if connected(self.redis):
            self._remove_node(node_id).addErrback(self.log_failure, f"removing node {node_id}'s registrations")

    def resync(self) -> None:
        """Redis is back, this node was taken for dead, or its bus listens again after a reconnect: what
        was sent to it meanwhile is lost. Answers to calls forwarded from here may be among it, so those
        calls fail now (their callees are told) rather than wait for ever, and calls forwarded here
        end too. Then this node's registrations are written again (Redis may have restarted empty, or
        purged them) and everyone's read anew."""
        for rr in list(self.realms.values()):
            for call in rr.dealer.remote_calls():
                rr.fail(call, "the call's answer may have been lost (the cluster's Redis was away)")
                self.send(call.node, GONE, [call.caller.id], _nothing)
        # The other way round, a CANCEL or a caller's leaving may have been lost: calls of other nodes'
        # callers end here (killnowait: the callee is told, the caller's node hears canceled if it waits).
        for stand_in in list(self.stand_ins.values()):
            dealer = stand_in.realm.dealer
            for request in list(dealer._calls.get(stand_in.id, {})):
                dealer.cancel(stand_in, [wamp.CANCEL, request, {"mode": "killnowait"}])
        self._resync().addErrback(self.log_failure, "re-writing this node's registrations")

    @defer.inlineCallbacks
    def _resync(self):
        for rr in list(self.realms.values()):
            for reg in rr.dealer.registrations():
                if not reg.in_cluster:
                    continue
                fld = field(reg.procedure, reg.match)
                for c in reg.callees:
                    uri, raw, _ = yield self.eval(ADD, [realm_key(rr.uri), COUNTER, node_key(self.node_id), REALMS], [
                        self.node_id, rr.uri, fld, reg.invoke, reg.id, repr(reg.created),
                        callee_id(self.node_id, c.session.id), "1"])
                    if uri:
                        self.log.warn("registration of {procedure} by session {sid} conflicts with another node's "
                                      "since Redis was lost ({uri}): it is served to this node's callers only",
                                      procedure=wamp.quote(reg.procedure), sid=c.session.id, uri=uri)
        yield self.reload()
        stale = []  # callees of this node that left while Redis was away
        for realm, index in list(self.view.indexes.items()):
            rr = self.realms.get(realm)
            for entry in list(index.values()):
                reg = rr.dealer.lookup(entry.procedure, entry.match) if rr is not None else None
                here = {c.session.id for c in reg.callees} if reg is not None and reg.in_cluster else set()
                stale.extend((realm, field(entry.procedure, entry.match), callee_id(node, sid))
                             for node, sid in entry.callees if node == self.node_id and sid not in here)
        if stale:
            yield self.remove(self.node_id, stale)

    @defer.inlineCallbacks
    def stop(self):
        """Graceful stop (this node's sessions are closed): whatever of this node is left in Redis goes."""
        if connected(self.redis):
            yield self._remove_node(self.node_id)

    def seen_everywhere(self) -> defer.Deferred:
        """Fires once every other live node has answered a message sent now: it travels on the same
        connection as the broadcasts and after them, so each has applied every change made before
        (a node that does not answer within SEEN_TIMEOUT, or listens nowhere, is not waited for)."""
        def ask(ids: Any) -> defer.Deferred:
            others = sorted(i for i in ids if i != self.node_id)[:MAX_NODES]
            return defer.DeferredList([self.bus.request(n, SEEN, None, timeout=SEEN_TIMEOUT) for n in others],
                                      consumeErrors=True)

        return self.redis.smembers(NODES).addCallbacks(ask, lambda f: None)

    # -- Redis -------------------------------------------------------------------------------------
    def eval(self, script: str, keys: list, args: list) -> defer.Deferred:
        """One script, sent in order with every other command of this node (EVAL, not EVALSHA: a
        missing script would be retried after later commands)."""
        return self.redis.execute_command("EVAL", script, len(keys), *keys, *args)

    def apply(self, realm: str, fld: str, raw: str) -> None:
        """A script's answer (the entry after its change): applied now, before its broadcast is back."""
        self.view.apply(realm, fld, raw, int(json.loads(raw)["v"]))

    def remove(self, node: str, triples: list[tuple[str, str, str]] | None = None) -> defer.Deferred:
        """Callees out of their entries (idempotent), or (no triples) a batch of every callee of `node`;
        applies the changes; Deferred[(entries looked at, the changes)]."""
        if not connected(self.redis):
            return defer.fail(ClusterUnavailable())
        args = [x for t in triples for x in t] if triples is not None else [NODE_BATCH]
        return self.eval(REMOVE, [COUNTER, node_key(node)], [self.node_id, node, *args]).addCallback(self._removed)

    def _removed(self, reply: list) -> tuple[int, list]:
        looked, changes = reply
        for realm, fld, _, after, _, v in changes:
            self.view.apply(realm, fld, after, int(v))
        return looked, changes

    @defer.inlineCallbacks
    def _remove_node(self, node: str):
        """Every callee of `node` out of Redis, a batch per script read from the node's index inside it:
        the first batch is sent at once, before a purge of the dead node deletes its index. Meta events
        for what this node removed (another node running the same cleanup finds nothing left)."""
        for _ in range(100):
            looked, changes = yield self.remove(node)
            self._announce_removed(changes)
            if not looked:
                return

    def _announce_removed(self, changes: list) -> None:
        for realm, fld, before, after, gone, _ in changes:
            rr = self.realms.get(realm)
            if rr is None or rr.dealer.listener is None:
                continue
            match, procedure = json.loads(fld)
            entry = Entry(procedure, match, json.loads(before))
            for i, c in enumerate(gone):
                sid = int(c.rpartition("|")[2])
                rr.dealer.listener.unregistered(sid, entry, not after and i == len(gone) - 1)

    @defer.inlineCallbacks
    def reload(self):
        """The view from Redis's snapshot (changes broadcast meanwhile are kept)."""
        self.view.begin_load()
        try:
            reply = yield self.eval(SNAPSHOT, [COUNTER, REALMS], [MAX_SNAPSHOT])
        except Exception:
            self.view.end_load(None)
            raise
        self.view.end_load(reply)

    def _reg_changed(self, sender: str, body: list) -> None:
        self.view.apply(*decode_change(body))

    def _changed(self, realm: str, procedure: str, match: str, entry: Entry | None) -> None:
        rr = self.realms.get(realm)
        if rr is not None:
            rr.changed(procedure, match, entry)

    def sync(self, then: Any, msg: list) -> bool:
        """Run `then()` once this node's bus has delivered every broadcast Redis made before now (a
        message to itself comes back: pub/sub keeps Redis's order). False: not waited for (`msg` is
        being routed again already, too many wait, or Redis is away)."""
        if msg is self.again or len(self._syncs) >= MAX_SYNCS or not connected(self.redis):
            return False
        from twisted.internet import reactor

        self._sync_ids += 1
        token = self._sync_ids
        timer = reactor.callLater(SYNC_TIMEOUT, self._synced, self.node_id, token)
        self._syncs[token] = (then, timer)
        self.bus.send(self.node_id, SYNC, token).addCallbacks(
            lambda n: None if n else self._synced(self.node_id, token), lambda f: self._synced(self.node_id, token))
        return True

    def _synced(self, sender: str, token: int) -> None:
        waiting = self._syncs.pop(token, None) if sender == self.node_id else None
        if waiting is None:
            return
        then, timer = waiting
        if timer.active():
            timer.cancel()
        then()

    # -- the bus -----------------------------------------------------------------------------------
    def send(self, node: str, kind: str, body: list, failed: Any) -> None:
        """To one node; `failed()` if it cannot be sent or nobody listens there."""
        if not self.outbox.send(node, kind, body, failed):
            failed()  # it may read outbox.refused (RealmRPC.fail)
            self.outbox.refused = None

    def release(self, stand_in: Session) -> None:
        """A stand-in with no call in flight any more is dropped."""
        if stand_in.id not in stand_in.realm.dealer._calls:
            key = (stand_in.transport.node, stand_in.id)
            if self.stand_ins.get(key) is stand_in:
                del self.stand_ins[key]

    def _stand_in(self, node: str, caller_id: int, rr: RealmRPC, authid: str, authrole: str,
                  features: Any) -> Session | None:
        key = (node, caller_id)
        stand_in = self.stand_ins.get(key)
        if stand_in is None:
            if len(self.stand_ins) >= MAX_STAND_INS:
                return None
            relay = _Relay(self, node)
            stand_in = Session(caller_id, rr.uri, relay, None, None,
                               {"caller": features} if type(features) is dict else {}, authid, authrole, "", "",
                               realm=rr.router)
            role = rr.router.spec.role(authrole)  # its role's disclosure rules, as on its own node
            stand_in.authorizer = None if role is None or role.allows_everything() else role
            relay.session = stand_in
            self.stand_ins[key] = stand_in
        return stand_in

    def _call_here(self, sender: str, body: list) -> None:
        """A CALL forwarded from the caller's node to a callee of this node."""
        realm, caller_id, authid, authrole, features, match, pattern, sid, msg = body
        rr = self.realms.get(realm)
        if rr is None:
            self.send(sender, ANSWER, [caller_id, wamp.error(wamp.CALL, msg[1], wamp.NO_SUCH_PROCEDURE, [
                "no procedure registered for it"]), False], _nothing)
            return
        stand_in = self._stand_in(sender, caller_id, rr, authid, authrole, features)
        if stand_in is None:
            self.send(sender, ANSWER, [caller_id, wamp.error(wamp.CALL, msg[1], wamp.CANCELED, [
                "the callee's node has too many calls in flight"]), False], _nothing)
            return
        dealer = rr.dealer
        calls = dealer._calls.get(caller_id)
        stale = calls.get(msg[1]) if calls is not None else None
        if stale is not None:  # a call its node gave up on (its answer lost), and the request id used again
            dealer._forget(stale)
            if stale.callee.canceling:
                dealer._interrupt(stale, "killnowait", wamp.CANCELED)
        reg = dealer.lookup(pattern, match)
        callee: Callee | None = None
        if reg is not None:
            for c in reg.callees:
                if c.session.id == sid:
                    callee = c
                    break
            else:
                callee = reg.pick() if reg.callees else None
        try:
            if callee is None:
                stand_in.transport.send(wamp.error(wamp.CALL, msg[1], wamp.NO_SUCH_PROCEDURE, [
                    f"no procedure registered for {wamp.quote(msg[3])}"]))
            else:
                dealer.invoke(stand_in, msg, reg, callee, dealer._calls.get(caller_id))
        except wamp.ProtocolViolation as e:
            stand_in.transport.send(wamp.error(wamp.CALL, msg[1], wamp.INVALID_ARGUMENT, [str(e)]))
        self.release(stand_in)

    def _more_here(self, sender: str, body: list) -> None:
        caller_id, msg = body
        stand_in = self.stand_ins.get((sender, caller_id))
        if stand_in is None:
            return  # the call is over here (answered, canceled, timed out)
        calls = stand_in.realm.dealer._calls.get(caller_id)
        if calls is None or msg[1] not in calls:
            return
        try:
            stand_in.realm.dealer.call(stand_in, msg)
        except wamp.ProtocolViolation as e:
            self.log.info("a progressive CALL from node {node} was refused: {e}", node=sender, e=str(e))

    def _cancel_here(self, sender: str, body: list) -> None:
        caller_id, msg = body
        stand_in = self.stand_ins.get((sender, caller_id))
        if stand_in is not None:
            stand_in.realm.dealer.cancel(stand_in, msg)

    def _gone_here(self, sender: str, body: list) -> None:
        stand_in = self.stand_ins.pop((sender, body[0]), None)
        if stand_in is not None:
            stand_in.realm.dealer.detach(stand_in)

    def _answer_here(self, sender: str, body: list) -> None:
        """A RESULT or ERROR for a caller of this node, from the callee's node."""
        caller_id, msg, bulk = body
        session = self.table.lookup(caller_id)
        if session is None or session.realm is None:
            return
        code = msg[0]
        request = msg[1] if code == wamp.RESULT else msg[2]
        dealer = session.realm.dealer
        calls = dealer._calls.get(caller_id)
        call = calls.get(request) if calls is not None else None
        if type(call) is not RemoteCall or call.node != sender:
            return  # answered already (canceled, failed)
        final = code != wamp.RESULT or not msg[2].get("progress")
        if final:
            dealer.forget_remote(call)
        refused = session.transport.send(msg, bulk)
        if refused is not None and not final:  # the caller got an ERROR in its place: the callee stops
            dealer.forget_remote(call)
            self.send(sender, CANCEL, [caller_id, [wamp.CANCEL, request, {"mode": "killnowait"}]], lambda: None)

    def log_failure(self, f: Failure, what: str) -> None:
        if f.check(ClusterUnavailable):
            self.log.warn("{what}: the cluster's Redis is unreachable", what=what)
            return
        self.log.failure("{what} failed", failure=f, what=what)
