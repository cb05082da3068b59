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
