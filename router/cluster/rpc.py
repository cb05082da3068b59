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
that dies fails its pending callers (`wamp.error.canceled`, when the node is seen dead); an answer lost
with Redis is not waited for: the caller's node ends the call at its CALL timeout (`wamp.error.timeout`,
as the callee's node would) or, without one, after node_timeout if Redis is away then
(`wamp.error.canceled`; `Deadlines`); a caller that
leaves, or whose node dies, has its stand-in detached, so callees that announced call_canceling get
INTERRUPT.
"""

from __future__ import annotations

import json
import time
from typing import Any

import txredisapi
from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from router import wamp
from router.backend import RemoteCallee
from router.cluster import barrier, purge
from router.cluster.connection import ClusterUnavailable, connected
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
from router.dealer import Callee, Dealer, RemoteCall
from router.session import Session

# To the callee's node: [realm, caller id, authid, authrole, caller features, match, pattern, callee id, CALL].
CALL = "rpc.call"
MORE = "rpc.more"  # a further progressive CALL: [caller id, CALL]
CANCEL = "rpc.cancel"  # [caller id, CANCEL]
PENDING = "rpc.pending"  # a request to the callee's node: [caller id, request id] → still in flight there?
GONE = "rpc.gone"  # the caller left: [caller id]
ANSWER = "rpc.answer"  # to the caller's node: [caller id, RESULT or ERROR, bulk]
SYNC = "rpc.sync"  # to this node itself: [token]; back once every earlier broadcast is
MAX_SYNCS = 1_000  # CALLs waiting for their node to catch up with Redis; more are answered at once
SYNC_TIMEOUT = 1.0  # seconds a CALL waits for that at most
UNREACHABLE = "the callee's node cannot be reached"
MAX_STAND_INS = 100_000  # callers of other nodes with calls in flight here
NODE_BATCH = 10_000  # entries a dead or leaving node's cleanup handles per script

if node_key not in purge.NODE_KEYS:
    purge.NODE_KEYS.append(node_key)


class Deadlines:
    """The caller's node's own end of forwarded calls, for when their answer is lost (Redis away,
    restarted or failed over, the answer published to a master that died): a call with a CALL timeout
    ends at it; one without is checked every node_timeout: Redis away, or the callee's node does not
    answer, or it says the call is not in flight there any more (its answer lost on the way) — the
    caller hears wamp.error.canceled. One scan every SCAN seconds while calls are forwarded; a call's
    entry goes at the first scan after its answer."""

    SCAN = 0.05
    LATE = 0.5  # seconds an answer the callee's node says it sent may still take to arrive

    def __init__(self, redis: Any, node_timeout: float, bus: Any = None) -> None:
        self.redis = redis
        self.bus = bus
        self.node_timeout = node_timeout
        self._at: dict[RemoteCall, tuple[RealmRPC, float, bool]] = {}
        self._loop = task.LoopingCall(self._scan)

    def add(self, rr: RealmRPC, call: RemoteCall, timeout: Any) -> None:
        timed = type(timeout) is int and timeout > 0
        self._at[call] = (rr, time.monotonic() + (timeout / 1000.0 if timed else self.node_timeout), timed)
        if not self._loop.running:
            self._loop.start(self.SCAN, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _scan(self) -> None:
        now, up = time.monotonic(), None
        for call, (rr, at, timed) in list(self._at.items()):
            if rr.dealer.calls_of(call.caller.id).get(call.call_id) is not call:
                del self._at[call]  # answered, canceled or failed
            elif now >= at:
                if timed:
                    del self._at[call]
                    if rr.dealer.forget_remote(call):
                        call.caller.transport.send(wamp.error(wamp.CALL, call.call_id, wamp.TIMEOUT, [
                            "the call timed out (CALL.Options.timeout)"]))
                    continue
                if up is None:
                    up = connected(self.redis)
                if not up:
                    del self._at[call]
                    rr.fail(call, "the cluster's Redis is unreachable: the call's answer cannot arrive")
                    continue
                self._at[call] = (rr, now + self.node_timeout, False)
                if self.bus is not None:
                    self._ask(rr, call)
        if not self._at:
            self._loop.stop()

    def _ask(self, rr: RealmRPC, call: RemoteCall) -> None:
        """Is the call still in flight on the callee's node? No answer: it cannot reach us either."""
        def answered(pending: Any) -> None:
            if pending is not True and call in self._at:  # sent already, or lost: a moment for it to come
                reactor.callLater(self.LATE + self.SCAN, self._lost, rr, call)

        def unreachable(f: Failure) -> None:
            if call in self._at:
                del self._at[call]
                rr.fail(call, UNREACHABLE)

        self.bus.request(call.node, PENDING, [call.caller.id, call.call_id], timeout=self.node_timeout).addCallbacks(
            answered, unreachable)

    def _lost(self, rr: RealmRPC, call: RemoteCall) -> None:
        if call in self._at and rr.dealer.calls_of(call.caller.id).get(call.call_id) is call:
            del self._at[call]
            rr.fail(call, "the call's answer was lost between nodes")


_META = ["meta"]  # what a meta API call waits as, for ClusterRPC.sync (never a CALL being routed again)


def _nothing() -> None:
    """An answer that cannot reach the caller's node: that node fails the call when it sees this one gone."""


class _Relay:
    """A stand-in caller's transport: what the dealer sends the caller goes back to the caller's node."""

    __slots__ = ("rpc", "node", "session")
    codec = None  # a Peer (router.session) that is sent message lists, never prepared frames

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
    """One realm's dealer backend in a cluster (router/backend DealerBackend): REGISTER and UNREGISTER are
    agreed in Redis, the router-wide registrations are projected into the dealer's own index (other
    nodes' callees as RemoteCallee), and CALLs to those are forwarded to their nodes."""

    def __init__(self, rpc: ClusterRPC, router: Any) -> None:
        self.rpc = rpc
        self.router = router
        self.uri = router.uri
        self.dealer: Dealer = router.dealer
        self.node_id = rpc.node_id

    # -- registrations -----------------------------------------------------------------------------
    def register(self, session: Session, procedure: str, match: str, invoke: str, reg_id: int,
                 new: bool) -> defer.Deferred:
        """Atomic in Redis (two callees racing for a `single` procedure on two nodes: one wins), then
        (registration id, created cluster-wide) once every other live node has the registration, so a
        CALL made next on any node finds it."""
        rpc = self.rpc
        if not connected(rpc.redis):
            return defer.fail(ClusterUnavailable())
        fld = field(procedure, match)
        d = rpc.eval(ADD, [realm_key(self.uri), COUNTER, node_key(self.node_id), REALMS],
                     [self.node_id, self.uri, fld, invoke, reg_id, repr(time.time()),
                      callee_id(self.node_id, session.id), ""])

        def done(reply: list) -> Any:
            uri, raw, created = reply
            if uri:
                raise wamp.WampError(uri, f"procedure {wamp.quote(procedure)} is already registered"
                                     if uri == wamp.PROCEDURE_ALREADY_EXISTS
                                     else f"{wamp.quote(procedure)} is registered with another invocation policy, "
                                          f"not {invoke!r}")
            rpc.apply(self.uri, fld, raw)
            agreed = (int(json.loads(raw)["id"]), bool(created))
            return rpc.seen_everywhere().addCallback(lambda _: agreed)

        return d.addCallback(done)

    def registered(self, session: Session, procedure: str, match: str) -> None:
        """The callee is routable here now: the dealer takes the view's order (registration order)."""
        index = self.rpc.view.indexes.get(self.uri)
        entry = index.get(procedure, match) if index is not None else None
        if entry is not None:
            self.changed(procedure, match, entry)

    def unregister(self, session: Session, procedure: str, match: str, last_here: bool) -> defer.Deferred:
        """Out of Redis, then deleted-cluster-wide once every other live node has applied it (UNREGISTERED
        waits for that, as REGISTERED does). Redis away: answered now; resync takes it out later."""
        rpc = self.rpc
        rpc.view.drop_callee(self.uri, procedure, match, self.node_id, session.id)
        if not connected(rpc.redis):
            return defer.succeed(last_here)
        d = rpc.remove(self.node_id, [(self.uri, field(procedure, match), callee_id(self.node_id, session.id))])

        def done(reply: tuple[int, list]) -> defer.Deferred:
            deleted = any(not after for _, _, _, after, _, _ in reply[1])
            return rpc.seen_everywhere().addCallback(lambda _: deleted)

        return d.addCallbacks(done, lambda f: last_here)

    def registering(self, session_id: int) -> int:
        return 0  # the dealer counts REGISTERs in flight itself

    def changed(self, procedure: str, match: str, entry: Entry | None) -> None:
        """The view changed: the dealer's registration follows it (callees in Redis's order)."""
        me = self.node_id
        if entry is None:
            self.dealer.apply_shared(procedure, match, 0, "single", 0.0, [])
            return
        self.dealer.apply_shared(procedure, match, entry.id, entry.invoke, entry.created,
                                 [(None if node == me else node, sid) for node, sid in entry.callees])

    # -- CALL --------------------------------------------------------------------------------------
    def forward(self, call: RemoteCall, msg: list, procedure: str, match: str, callee: RemoteCallee) -> None:
        caller = call.caller
        options = msg[2]
        self.rpc.deadlines.add(self, call, options.get("timeout") if options else None)
        roles = caller.roles
        features = roles.get("caller") if type(roles) is dict else None
        self.rpc.send(callee.node, CALL, [self.uri, caller.id, caller.authid, caller.authrole, features, match,
                                          procedure, callee.session_id, msg], lambda: self.fail(call, UNREACHABLE))

    def forward_more(self, call: RemoteCall, msg: list) -> None:
        """A further progressive CALL of a forwarded call."""
        self.rpc.send(call.node, MORE, [call.caller.id, msg], lambda: self.fail(call, UNREACHABLE))

    def cancel(self, call: RemoteCall, msg: list) -> None:
        """CANCEL of a forwarded call: the callee's node cancels it (its dealer answers, by mode)."""
        self.rpc.send(call.node, CANCEL, [call.caller.id, msg], lambda: self.fail(call, "the call was canceled"))

    def caller_left(self, call: RemoteCall) -> None:
        self.rpc.send(call.node, GONE, [call.caller.id], lambda: None)

    def catch_up(self, session: Session, msg: list, then: Any) -> bool:
        """A CALL that matches no registration of the view: another node may have registered it just
        before (its REGISTERED reached the caller before the broadcast reached this node). True: the CALL
        is routed again once this node's bus has caught up with Redis (one round trip), only then may it
        be answered wamp.error.no_such_procedure. Only misses pay for this."""
        def again() -> None:
            if self.rpc.table.lookup(session.id) is not session:
                return  # it left meanwhile
            self.rpc.again = msg
            try:
                then()
            finally:
                self.rpc.again = None

        return self.rpc.sync(again, msg)

    def synced(self) -> defer.Deferred:
        """Fires once this node has every registration made before now (the meta API answers then, so
        that a registration another node has just confirmed is listed)."""
        d: defer.Deferred = defer.Deferred()
        if not self.rpc.sync(lambda: d.callback(None), _META):
            d.callback(None)
        return d

    def fail(self, call: RemoteCall, why: str) -> None:
        """The caller hears wamp.error.canceled (payload_size_exceeded or invalid_argument if the CALL
        could not cross), unless its call is over already."""
        if self.dealer.forget_remote(call):
            uri, why = refusal(self.rpc.outbox.refused, why)
            call.caller.transport.send(wamp.error(wamp.CALL, call.call_id, uri, [why]))


class ClusterRPC:
    """The cluster part (router/cluster/part.py) for registrations and calls across nodes."""

    log = Logger()

    def __init__(self, redis: Any, bus: Any, node_id: str, table: Any, node_timeout: float = 3.0) -> None:
        self.redis = redis
        self.deadlines = Deadlines(redis, node_timeout, bus)
        bus.on(PENDING, self._pending_here)
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
        barrier.answer_seen(bus)
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
        router.dealer.backend = rr
        for entry in list(self.view.entries(router.uri)):  # what the other nodes registered before it started
            rr.changed(entry.procedure, entry.match, entry)

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
            for request in list(dealer.calls_of(stand_in.id)):
                dealer.cancel(stand_in, [wamp.CANCEL, request, {"mode": "killnowait"}])
        self._resync().addErrback(self.log_failure, "re-writing this node's registrations")

    @defer.inlineCallbacks
    def _resync(self):
        for rr in list(self.realms.values()):
            for reg in rr.dealer.registrations():
                if reg.own:
                    continue
                fld = field(reg.procedure, reg.match)
                for c in list(reg.local.values()):
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
                here = set(reg.local) if reg is not None and not reg.own else set()
                stale.extend((realm, field(entry.procedure, entry.match), callee_id(node, sid))
                             for node, sid in entry.callees if node == self.node_id and sid not in here)
        if stale:
            yield self.remove(self.node_id, stale)

    @defer.inlineCallbacks
    def stop(self):
        """Graceful stop (this node's sessions are closed): whatever of this node is left in Redis goes."""
        self.deadlines.stop()
        if connected(self.redis):
            yield self._remove_node(self.node_id)

    def seen_everywhere(self) -> defer.Deferred:
        """Fires once every other live node has answered a message sent now: it travels on the same
        connection as the broadcasts and after them, so each has applied every change made before
        (a node that does not answer within SEEN_TIMEOUT, or listens nowhere, is not waited for)."""
        return barrier.seen_everywhere(self.redis, self.bus, self.node_id)

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
        if not stand_in.realm.dealer.calls_of(stand_in.id):
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
        stale = dealer.calls_of(caller_id).get(msg[1])
        if stale is not None:  # a call its node gave up on (its answer lost), and the request id used again
            dealer.drop(stale)
        reg = dealer.lookup(pattern, match)
        callee: Callee | None = None
        if reg is not None:  # the callee picked, or (it left) another callee here, if any
            callee = reg.local.get(sid) or next(iter(reg.local.values()), None)
        try:
            if callee is None:
                stand_in.transport.send(wamp.error(wamp.CALL, msg[1], wamp.NO_SUCH_PROCEDURE, [
                    f"no procedure registered for {wamp.quote(msg[3])}"]))
            else:
                dealer.invoke(stand_in, msg, reg, callee, dealer.calls_of(caller_id) or None)
        except wamp.ProtocolViolation as e:
            stand_in.transport.send(wamp.error(wamp.CALL, msg[1], wamp.INVALID_ARGUMENT, [str(e)]))
        self.release(stand_in)

    def _pending_here(self, sender: str, body: list) -> bool:
        """The caller's node asks whether its call is still in flight here (its answer not sent yet)."""
        caller_id, request = body
        stand_in = self.stand_ins.get((sender, caller_id))
        return stand_in is not None and request in stand_in.realm.dealer.calls_of(caller_id)

    def _more_here(self, sender: str, body: list) -> None:
        caller_id, msg = body
        stand_in = self.stand_ins.get((sender, caller_id))
        if stand_in is None:
            return  # the call is over here (answered, canceled, timed out)
        if msg[1] not in stand_in.realm.dealer.calls_of(caller_id):
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
        call = dealer.calls_of(caller_id).get(request)
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
        if f.check(ClusterUnavailable, txredisapi.ConnectionError):  # Redis away, or lost mid-command
            self.log.warn("{what}: the cluster's Redis is unreachable", what=what)
            return
        self.log.failure("{what} failed", failure=f, what=what)
