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


# -- WAMP-CRA ----------------------------------------------------------------------------------------
CRA_ITERATIONS = 1000  # Autobahn's default; the client derives the key at every login


def derive_cra_key(secret: str, salt: str, iterations: int = CRA_ITERATIONS, keylen: int = 32) -> str:
    """Autobahn's `derive_key`: base64 PBKDF2-HMAC-SHA256 of the secret with the salt as text, what a
    WAMP-CRA client computes from its secret and the salt in the CHALLENGE."""
    key = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt.encode(), iterations, keylen)
    return base64.b64encode(key).decode()


def salted_cra(secret: str, iterations: int = CRA_ITERATIONS) -> dict:
    """A user's `wampcra` definition that keeps a salted derived key, never the secret itself."""
    salt = base64.b64encode(os.urandom(12)).decode()
    return {"key": derive_cra_key(secret, salt, iterations), "salt": salt, "iterations": iterations, "keylen": 32}


# -- logging -----------------------------------------------------------------------------------------
_SECRET_WORDS = ("ticket", "secret", "password", "passwd", "key", "token", "wampcra", "credential")
MASK = "***"


def is_secret_name(name: object) -> bool:
    """Whether a value under this name (a keyword, a mapping key) is a secret or derived from one."""
    return isinstance(name, str) and any(w in name.lower() for w in _SECRET_WORDS)


def redact(value: object, depth: int = 0, max_depth: int = 8, max_items: int = 50) -> object:
    """A copy fit for a log line: values under secret-looking keys masked at any depth; deeper or
    longer structures cut short (bounded work whatever a caller sends)."""
    if depth >= max_depth:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())[:max_items]
        return {_short(k): MASK if is_secret_name(k) else redact(v, depth + 1, max_depth, max_items)
                for k, v in items}
    if isinstance(value, (list, tuple)):
        return [redact(v, depth + 1, max_depth, max_items) for v in value[:max_items]]
    return _short(value)


def _short(value: object, limit: int = 200) -> object:
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return value[:limit] + ("..." if isinstance(value, str) else b"...")
    return value
