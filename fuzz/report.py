"""The fuzzer's verdict: a short table for people, JSON for machines."""

from __future__ import annotations

import json


def failures(result: dict, max_rss_mb: float) -> list[str]:
    """Why the run failed (empty: it passed)."""
    out = []
    if result["log"]["tracebacks"]:
        out.append(f"{result['log']['tracebacks']} traceback lines in the router log")
    if result["hangs"]:
        out.append(f"{result['hangs']} connections hung (no answer or close in {result['hang_timeout']}s)")
    if not result["router_alive"]:
        out.append("the router process died")
    elif not all(result["final_check"].values()):
        out.append(f"the router no longer serves a real session: {result['final_check']}")
    if result["rss_mb"]["peak"] is not None and result["rss_mb"]["peak"] > max_rss_mb:
        out.append(f"router RSS peaked at {result['rss_mb']['peak']:.0f} MB (limit {max_rss_mb:.0f} MB)")
    return out


def table(result: dict) -> str:
    rss = result["rss_mb"]
    rows = [
        ("frames sent", f"{result['frames']:,}"),
        ("connections opened", f"{result['connections']:,} ({result['connect_failures']} failed to connect)"),
        ("duration", f"{result['seconds']:.1f} s ({result['frames'] / max(result['seconds'], 1e-9):,.0f} frames/s)"),
        ("tracebacks in router log", f"{result['log']['tracebacks']}"),
        ("hung connections", f"{result['hangs']} {result['hang_kinds'] or ''}"),
        ("probes answered / slowest", f"{result['probes'] - result['hangs']:,} / {result['probe_max_s']:.2f} s "
                                      f"({result['probe_slow']} over 1 s)"),
        ("router RSS start / peak / end", f"{_mb(rss['start'])} / {_mb(rss['peak'])} / {_mb(rss['end'])} MB"),
        ("router alive, final check", f"{result['router_alive']}, {result['final_check']}"),
        ("longest router log line", f"{result['log']['longest_line']:,} chars ({result['log']['lines']:,} lines)"),
        ("longest ABORT/ERROR text", f"{result['max_text']:,} chars"),
        ("undecodable router frames", f"{result['undecodable']}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if result["log"]["exceptions"]:
        lines.append("exceptions in the router log:")
        for exc, n in sorted(result["log"]["exceptions"].items(), key=lambda kv: -kv[1])[:20]:
            lines.append(f"  {n:>6} × {exc}")
    if result["fuzzer_errors"]:
        lines.append("the fuzzer's own errors (not the router's): " + "; ".join(
            f"{n} × {e}" for e, n in result["fuzzer_errors"].items()))
    if result["hang_samples"]:
        lines.append("hung connections (first few; last frames sent, hex):")
        for h in result["hang_samples"]:
            limit = f" max_message={h['max_message']}" if h.get("max_message") else ""
            sent = "; ".join(f"{k} {d[:80]}" for k, d in h["last_frames"][-3:])
            lines.append(f"  {h['transport']}/{h['serializer']}{limit} probe {h['probe']} "
                         f"established={h['established']}: {sent}")
    lines.append("verdict: " + ("PASS" if not result["failures"] else "FAIL: " + "; ".join(result["failures"])))
    return "\n".join(lines)


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def as_json(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=True, default=str)
