"""`courtyard admin` as the tests run it: two admin principals (root by ticket, robot by cryptosign)
and the CLI in a child process with no COURTYARD_* variables of the caller's."""

from __future__ import annotations

import os
import subprocess
import sys

from nacl.signing import SigningKey

from realms.secrets import hash_secret

KEY = SigningKey(bytes(range(32)))  # robot's
ADMIN = {"data_dir": None, "users": {"root": {"ticket": hash_secret("root-pw", iterations=1000)},
                                     "robot": {"cryptosign": [KEY.verify_key.encode().hex()]}}}
ENV = {k: v for k, v in os.environ.items() if not k.startswith("COURTYARD_")}


def cli(*argv: str, url: str | None = None,
        login: tuple[str, ...] = ("--authid", "root", "--ticket", "root-pw")) -> subprocess.CompletedProcess:
    """`courtyard admin [--url URL] LOGIN ARGV...`, as root unless `login` says otherwise."""
    cmd = [sys.executable, "-m", "router.cli", "admin", *(("--url", url) if url else ()), *login, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=ENV)
