"""A realm that authenticates by every method, with one user per method (test_auth's, shared by the
TLS, interop and cluster tests)."""

from __future__ import annotations

from autobahn.wamp.auth import derive_key
from nacl.signing import SigningKey

from realms.secrets import hash_secret

EVERYTHING = [{"uri": "", "match": "prefix", "allow": ["call", "register", "publish", "subscribe"]}]
SALT = "c2FsdHNhbHQ="
CRYPTO_KEY = SigningKey(bytes(range(32)))  # dave's


def auth_realm(**auth) -> dict:
    """Config with `realm1` open to ticket (alice), WAMP-CRA (bob; carol salted, role admin) and
    cryptosign (dave), not to anonymous; `auth` keys add to or override its methods."""
    return {"realms": [{
        "uri": "realm1",
        "auth": {"anonymous": False, "ticket": True, "wampcra": True, "cryptosign": True, **auth},
        "users": {
            "alice": {"role": "user", "ticket": hash_secret("alice-ticket", iterations=1000)},
            "bob": {"role": "user", "wampcra": {"secret": "bob-secret"}},
            "carol": {"role": "admin", "wampcra": {"key": derive_key("carol-secret", SALT, 100, 32).decode(),
                                                   "salt": SALT, "iterations": 100, "keylen": 32}},
            "dave": {"role": "user", "cryptosign": [CRYPTO_KEY.verify_key.encode().hex()]},
        },
        "roles": {"user": {"permissions": EVERYTHING}, "admin": {"permissions": EVERYTHING}},
    }]}
