"""Salted secret hashes for ticket users: `pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>`.
How secrets are stored is part of the user definition, so it lives with the policy.

Only the hash is kept in config and memory; verifying costs one PBKDF2 run, done off the reactor
thread by the caller, and an unknown user costs the same as a known one (no timing oracle)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 100_000
_DUMMY = None


def hash_secret(secret: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2-sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, stored: str | None) -> bool:
    """Constant work whether or not a hash is stored."""
    global _DUMMY
    if stored is None:
        if _DUMMY is None:
            _DUMMY = hash_secret(os.urandom(8).hex())
        stored, known = _DUMMY, False
    else:
        known = True
    try:
        _, iterations, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha256", secret.encode(), base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest)) and known
