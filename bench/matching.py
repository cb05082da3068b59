"""Micro-benchmark of URI matching (router/matching.py), in process: the cost of one lookup in a
table of 10,000 registrations/subscriptions of mixed kinds, against the same lookup in a table of 10.

`best` is the dealer's choice for a CALL, `matches` the broker's fan-out for a PUBLISH. The claim to
check: an exact hit stays a dict hit whatever else is in the table, and a pattern lookup does not
grow with the number of unrelated entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from router.matching import PatternIndex

KINDS = {"exact": 0.6, "prefix": 0.2, "wildcard": 0.2}


def build(n: int) -> PatternIndex[int]:
    """`n` entries: 60% exact, 20% prefix, 20% wildcard, spread over apps and components."""
    index: PatternIndex[int] = PatternIndex()
    n_exact, n_prefix = int(n * KINDS["exact"]), int(n * KINDS["prefix"])
    for i in range(n_exact):
        index.add(f"com.app{i % 97}.svc{i}.run", "exact", i)
    for i in range(n_prefix):
        index.add(f"org.app{i % 89}.area{i}.", "prefix", i)
    for i in range(n - n_exact - n_prefix):
        index.add(f"net.app{i % 83}..evt{i}", "wildcard", i)
    return index


# What each lookup asks for: a URI that hits an entry of one kind (and nothing else), or nothing.
PROBES = {
    "exact-hit": "com.app1.svc1.run",
    "prefix-hit": "org.app1.area1.deep.call",
    "wildcard-hit": "net.app1.anything.evt1",
    "miss": "io.nobody.here.at_all",
}


def per_lookup(fn: Callable[[str], object], uri: str, seconds: float) -> float:
    """Microseconds per call of fn(uri), over repeated batches for about `seconds`."""
    batch, calls, spent = 2000, 0, 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn(uri)
        spent += time.perf_counter() - t0
        calls += batch
    return 1e6 * spent / max(calls, 1)


def run(sizes: tuple[int, ...] = (10, 10_000), seconds: float = 0.3) -> list[dict]:
    """One row per (probe, size): the cost of `best` and `matches`, and the ratio to the smallest size."""
    rows = []
    for probe, uri in PROBES.items():
        first: dict[str, float] = {}
        for n in sizes:
            index = build(n)
            best = per_lookup(index.best, uri, seconds)
            matches = per_lookup(lambda u, _i=index: list(_i.matches(u)), uri, seconds)
            first.setdefault("best", best)
            first.setdefault("matches", matches)
            rows.append({"probe": probe, "entries": n, "best_us": round(best, 3), "matches_us": round(matches, 3),
                         "best_vs_first": round(best / first["best"], 3),
                         "matches_vs_first": round(matches / first["matches"], 3)})
    return rows
