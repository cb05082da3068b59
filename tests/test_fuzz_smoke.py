"""Keeps the fuzzer (fuzz/, scripts/fuzz) working, and the router fuzz-clean: a few thousand frames over
both transports and every serializer, in the clear and over TLS (`--tls`), must leave no traceback in
the router's log, no hung connection, and a router that still serves a real session.

This fails while the router has a bug the fuzzer can reach (issue 11); the JSON it prints says which.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tls", [False, True], ids=["clear", "tls"])
def test_fuzz_smoke(tls: bool):
    frames = "2000" if tls else "4000"  # TLS costs both sides more per connection: fewer, same coverage
    out = subprocess.run([sys.executable, "-m", "fuzz", "--frames", frames, "--seconds", "20", "--connections", "20",
                          "--seed", "11", "--json", *(["--tls"] if tls else [])], cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    assert out.stdout.strip(), out.stderr[-3000:]
    result = json.loads(out.stdout)
    # it ran: frames on many connections, probes answered, both transports and a routed call at the end
    assert result["frames"] >= 1000, result["frames"]
    assert result["connections"] >= 20 and result["probes"] > 0
    assert result["router_alive"]
    assert result["final_check"] == {"welcome_ws": True, "welcome_rs": True, "call": True}
    assert not result["fuzzer_errors"], result["fuzzer_errors"]
    # and the router came through it clean
    assert result["log"]["tracebacks"] == 0, result["log"]["exceptions"]
    assert result["hangs"] == 0, result["hang_samples"]
    assert result["rss_mb"]["peak"] < result["meta"]["max_rss_mb"]
    assert result["meta"]["tls"] is tls
    assert out.returncode == (1 if result["failures"] else 0)
