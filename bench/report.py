"""The table for people and the JSON for machines."""

from __future__ import annotations

import json
import platform
from typing import Any

COLUMNS = [("scenario", 22), ("ser", 7), ("rate", 18), ("p50 ms", 7), ("p99 ms", 7), ("cost", 18),
           ("ceiling", 8), ("ratio", 6), ("router", 6), ("clients", 11), ("saturated", 9), ("note", 0)]


def _num(v: float, digits: int = 1) -> str:
    return f"{v:,.{digits}f}"


def _note(r: dict) -> str:
    notes = []
    if "idle_rss_mb" in r:
        notes.append(f"idle RSS {r['idle_rss_mb']} MB, RSS {r['rss_mb']} MB")
    if "startup_s" in r:
        notes.append(f"start-up {r['startup_s']} s")
    if "matches_us" in r:
        notes.append(f"broker matches() {r['matches_us']} us (x{r['matches_vs_first']} vs 10 entries)")
    if "vs_first" in r:
        notes.append(f"x{r['vs_first']} vs first level")
    if "vs_routed" in r:
        notes.append(f"x{r['vs_routed']} vs the routed call")
    if "kib_per_session_with_process" in r:
        notes.append(f"{r['kib_per_session']} KiB/session without, {r['kib_per_session_with_process']} with")
    if "ratio_to_echo" in r:
        notes.append(f"x{r['ratio_to_echo']} vs echo")
    if "ratio_to_local" in r:
        unit = "msg" if "redis_us_per_msg" in r else "publish"
        redis = r.get(f"redis_us_per_{unit}")
        notes.append(f"x{r['ratio_to_local']} vs one node ({r['local_us']} us)"
                     + ("" if redis is None else f"; Redis {redis} us per {unit}"))
    if r.get("delivered_share", 1) < 0.99:
        notes.append(f"{100 * r['delivered_share']:.1f}% of events delivered")
    if "redis_us" in r:
        notes.append(f"Redis {r['redis_us']} us per unit")
    if r.get("errors"):
        notes.append(f"{r['errors']} errors")
    return "; ".join(notes)


def table(rows: list[dict]) -> str:
    lines = ["  ".join(f"{name:<{w}}" for name, w in COLUMNS).rstrip()]
    for r in rows:
        util = r.get("clients_util")
        cells = [
            r["scenario"], r["serializer"],
            f"{_num(r['rate'])} {r['rate_unit']}" if r.get("rate_unit") else "",
            _num(r["p50_ms"], 2) if "p50_ms" in r else "",
            _num(r["p99_ms"], 2) if "p99_ms" in r else "",
            f"{_num(r['cost_us'], 2)} {r['cost_unit']}",
            _num(r["ceiling_us"], 2) if "ceiling_us" in r else "",
            _num(r["ratio"], 2) if "ratio" in r else "",
            f"{100 * r['router_util']:.0f}%" if "router_util" in r else "",
            "+".join(f"{100 * u:.0f}" for u in util) + "%" if util else "",
            r.get("saturated", ""),
            _note(r),
        ]
        lines.append("  ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip())
    return "\n".join(lines)


def legend() -> str:
    return ("cost: the router's (or ceiling server's) own CPU time (utime+stime, /proc/PID/stat) per routed "
            "message (one in, one out), delivered EVENT, session opened+closed, or idle session (KiB); "
            "ceiling: the same for the bare Autobahn server under the same load shape; ratio = cost / ceiling; "
            "router / clients: CPU use of the measured process and of each load process (100% = one core).")


def as_json(rows: list[dict], meta: dict[str, Any]) -> str:
    return json.dumps({"meta": meta, "rows": rows}, indent=2)


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
