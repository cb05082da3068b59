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
    per routed call (CALL and YIELD in, INVOCATION and RESULT out, the CALL's per-procedure count, the
    dealer's routed count) and per delivered EVENT (the realm's count). Read against the router's CPU per
    message from `--scenarios rpc,pubsub` (~45 us per rpc message, ~10 us per event here)."""
    from router.config import parse
    from router.node import Node
    from router.protocol import WampProtocol
    from router.serializers import create
    from router.session import Session
    from router.transport.rawsocket import RawSocketCodec

    node = Node(parse({"admin": {"data_dir": None}}))
    realm = node.realm_router("realm1")
    proto = WampProtocol(node, None, RawSocketCodec(create("msgpack", 64)), None)
    session = Session(1, "realm1", proto, None, None, {}, "a", "anonymous", "anonymous", "static", realm=realm)
    call, result = [48, 1, {}, "bench.echo"], [50, 1, {}]

    def message_in(_: str) -> None:  # WampProtocol.on_message, after validation
        proto._in[call[0]] += 1

    def message_out(_: str) -> None:  # WampProtocol._write, after a successful write
        code = result[0]
        proto._out[code] += 1
        if code <= 8:
            proto._error_sent(result)

    def procedure(_: str) -> None:  # WampProtocol.on_message, a CALL past its checks
        top = session.realm.tops.get(48)
        if top is not None:
            counts, uri = top.counts, call[3]
            n = counts.get(uri)
            if n is None:
                top.hit(uri)
            else:
                counts[uri] = n + 1

    def routed(_: str) -> None:  # Dealer.call
        realm.dealer.calls_routed += 1

    def event(_: str) -> None:  # WampProtocol.send_prepared
        session.realm.events_delivered += 1

    def fastest(fn) -> float:  # a few nanoseconds each: the least disturbed of 5 runs
        return min(per_lookup(fn, "", seconds / 5) for _ in range(5))

    base = fastest(lambda _: None)  # the harness's own call, in each figure
    cost = {fn: fastest(fn) - base for fn in (message_in, message_out, procedure, routed, event)}
    per_call = 2 * cost[message_in] + 2 * cost[message_out] + cost[procedure] + cost[routed]
    return [{"check": "metrics-per-call", "us": round(max(0.0, per_call), 3)},
            {"check": "metrics-per-event", "us": round(max(0.0, cost[event]), 3)}]
