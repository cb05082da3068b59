"""Micro-benchmark of the per-request checks, in process: what authorization (a role's cached
decision) and the rate and quota windows add to one CALL or PUBLISH. The end-to-end view of the same
question is `scripts/bench --scenarios rpc --router-profile open|authz|limits`; on a noisy 2-core
machine those runs differ by more than these costs, so this is the figure to read.
"""

from __future__ import annotations

import time

from bench.matching import per_lookup
from bench.procs import AUTHZ_RULES
from realms.schema import parse_role
from router.session import QuotaWindow, RateWindow


def run(seconds: float = 0.3) -> list[dict]:
    role = parse_role("bench", {"permissions": AUTHZ_RULES}, "bench")
    role.allows("call", "bench.echo")  # the first decision fills the cache; every later one is a hit
    rate = RateWindow(1_000_000_000, 1.0)
    quota = QuotaWindow(1_000_000_000, 3600.0)
    now = time.time()
    costs = {
        "authz-cached": per_lookup(lambda uri: role.allows("call", uri), "bench.echo", seconds),
        "authz-uncached": per_lookup(lambda uri: role.rule_for(uri), "bench.echo", seconds),
        "rate-window": per_lookup(lambda _: rate.hit(now), "", seconds),
        "quota-window": per_lookup(lambda _: quota.spend(now), "", seconds),
    }
    return [{"check": name, "us": round(us, 3)} for name, us in costs.items()]


def counting(seconds: float = 0.3) -> list[dict]:
    """What the /metrics counters add to the hot path (router/metrics.py), in process, on the real objects:
    per routed call (CALL and YIELD in, INVOCATION and RESULT out, the realm's per-procedure count, the
    dealer's routed count) and per delivered EVENT (the realm's count). Read against the router's CPU per
    message from `--scenarios rpc,pubsub` (~50 us per rpc message, ~10 us per event here)."""
    from router.config import parse
    from router.node import Node
    from router.session import Session

    node = Node(parse({"admin": {"data_dir": None}}))
    realm = node.realm_router("realm1")
    session = Session(1, "realm1", None, None, None, {}, "a", "anonymous", "anonymous", "static", realm=realm)
    msg = [48, 1, {}, "bench.echo"]

    def noop(session: Session, msg: list) -> None:
        pass

    realm._dealer_call = noop
    holder = type("Proto", (), {})()  # shaped as WampProtocol: self.node.stats
    holder.node = node

    def message_in(_: str) -> None:
        holder.node.stats.msgs_in[48] += 1

    def message_out(_: str) -> None:  # WampProtocol._write after a successful write
        code = msg[0]
        stats = holder.node.stats
        stats.msgs_out[code] += 1
        if code == 8:
            stats.errors.hit(msg[4])
        elif code == 3:
            stats.errors.hit(msg[2])

    def routed(_: str) -> None:
        realm.dealer.calls_routed += 1

    def event(_: str) -> None:
        session.realm.events_delivered += 1

    wrapped = per_lookup(lambda _: realm._call(session, msg), "", seconds)
    bare = per_lookup(lambda _: noop(session, msg), "", seconds)
    per_call = (2 * per_lookup(message_in, "", seconds) + 2 * per_lookup(message_out, "", seconds)
                + max(0.0, wrapped - bare) + per_lookup(routed, "", seconds))
    base = per_lookup(lambda _: None, "", seconds)  # the harness's own call, counted in each figure above
    return [{"check": "metrics-per-call", "us": round(max(0.0, per_call - 5 * base), 3)},
            {"check": "metrics-per-event", "us": round(max(0.0, per_lookup(event, "", seconds) - base), 3)}]
