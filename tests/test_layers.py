"""The layers and the interfaces are checked, not only written down (issue 21): `scripts/test` runs
`lint-imports` and `mypy` with setup.cfg's settings; these tests run the same tools on a copy of the
code with one deliberate violation each, so a contract or a type check that stopped constraining
anything would fail here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _copy(tmp_path: Path) -> Path:
    for pkg in ("router", "realms"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


def _run(tool: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(BIN), "PYTHONPATH": str(cwd)})


def test_the_import_contracts_hold_and_catch_an_edge_reaching_for_the_node(tmp_path):
    code = _copy(tmp_path)
    kept = _run("lint-imports", code, "--no-cache")
    assert kept.returncode == 0 and "2 kept, 0 broken" in kept.stdout, kept.stdout + kept.stderr
    http = code / "router" / "http.py"
    typed = "    from router.edges import HttpNode\n"
    http.write_text(http.read_text().replace(typed, typed + "    from router.node import Node\n"))
    admin = code / "realms" / "admin.py"
    admin.write_text("import router.wamp  # noqa\n" + admin.read_text())
    broken = _run("lint-imports", code, "--no-cache")
    assert broken.returncode == 1, broken.stdout
    assert "router.http is not allowed to import router.node" in broken.stdout, broken.stdout
    assert "realms.admin -> router.wamp" in broken.stdout, broken.stdout


def test_the_type_check_fails_when_node_no_longer_satisfies_an_edges_interface(tmp_path):
    code = _copy(tmp_path)
    edges = code / "router" / "edges.py"
    edges.write_text(edges.read_text().replace("    def tracks_cookies(self) -> bool: ...\n",
                                               "    def tracks_cookies(self) -> bool: ...\n\n"
                                               "    def drain(self) -> None: ...\n"))
    r = _run("mypy", code, "--cache-dir", str(tmp_path / ".mypy_cache"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "router/node.py" in r.stdout and "Listeners" in r.stdout, r.stdout
