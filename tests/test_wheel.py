"""The package as a user gets it: the wheel built from this tree, installed in a fresh venv, runs
`courtyard init` and `courtyard start` outside the repository and serves a client.

Offline and quick: the wheel is built without build isolation (setuptools and wheel come with the
test extra), and the fresh venv reaches the dependencies already installed here through a directory
of links (never this checkout's own editable install), so pip installs only the wheel, with --no-index.
The dependencies themselves are the registry's business; README.md says how long the full thing takes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest_twisted
from twisted.internet import threads

from tests.routerproc import free_port, stop_process
from tests.wampclient import connect, with_timeout

ensure = pytest_twisted.ensureDeferred
ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".venv", ".git", "__pycache__", "node_modules", "build", "dist", "*.egg-info", ".data",
                              ".hypothesis", ".ruff_cache")


def run(*cmd: str | Path, cwd: Path | None = None, timeout: float = 60) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
    return r.stdout


def _dependencies(into: Path) -> Path:
    """Links to this environment's installed packages, except Courtyard itself (and .pth hooks)."""
    into.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.startswith(("courtyard", "__editable__", "__pycache__")) or name.endswith(".pth"):
            continue
        (into / entry.name).symlink_to(entry)
    return into


def build_and_install(tmp: Path, timings: dict[str, float]) -> Path:
    """Build the wheel from a copy of this tree, install it into a fresh venv; the venv's bin/."""
    t = time.monotonic()
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=SKIP)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src,
        timeout=120)
    wheel = next((tmp / "dist").glob("courtyard-*.whl"))
    timings["build"] = time.monotonic() - t
    t = time.monotonic()
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "dependencies.pth").write_text(f"{_dependencies(tmp / 'deps')}\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index", wheel, timeout=120)
    timings["install"] = time.monotonic() - t
    return wheel


@ensure
async def test_the_wheel_installs_in_a_fresh_venv_and_init_then_start_serves(tmp_path):
    timings: dict[str, float] = {}
    wheel = await threads.deferToThread(build_and_install, tmp_path, timings)
    names = zipfile.ZipFile(wheel).namelist()
    assert {"router/configs/router.yaml", "router/configs/courtyard.schema.json",
            "router/configs/examples/auth.yaml", "router/cli.py", "realms/schema.py"} <= set(names)
    assert not [n for n in names if n.startswith(("bench/", "fuzz/", "tests/", "scripts/"))]
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    bin_ = tmp_path / "venv" / "bin"
    home = tmp_path / "home"
    home.mkdir()
    r = subprocess.run([bin_ / "python", "-c", "import router; print(router.__file__)\nimport bench"], cwd=home,
                       capture_output=True, text=True, timeout=30)
    where = r.stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not this checkout
    assert "No module named 'bench'" in r.stderr
    assert run(bin_ / "courtyard", "--version", cwd=home).strip() == "courtyard 0.1.0"
    t = time.monotonic()
    run(bin_ / "courtyard", "init", cwd=home)
    config = home / "courtyard.yaml"
    port = free_port()
    config.write_text(config.read_text().replace("    port: 8080\n", f"    port: {port}\n"))
    out = home / "start.out"
    log = open(out, "w")
    proc = subprocess.Popen([bin_ / "courtyard", "start"], cwd=home, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "started in" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            await threads.deferToThread(time.sleep, 0.05)
        client = await connect(f"ws://127.0.0.1:{port}/ws")
        await client.register(lambda: "served from the wheel", "com.example.hello")
        assert await client.call("com.example.hello") == "served from the wheel"
        client.leave()
        await with_timeout(client.left)
        timings["init+start+call"] = time.monotonic() - t
    finally:
        stop_process(proc, log)
    print("wheel test timings (s):", {k: round(v, 1) for k, v in timings.items()})
