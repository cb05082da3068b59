"""Authentication methods, negotiated from HELLO.Details.authmethods (WAMP spec, "Authentication").

Each method is a small object made per HELLO. `hello()` answers at once with a Welcome, a Challenge
(then `authenticate()` answers the client's AUTHENTICATE) or a Deny; any answer may be a Deferred.
A failure never says whether the authid exists: unknown users are challenged like known ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Welcome:
    authid: str
    authrole: str
    authmethod: str
    authprovider: str = "static"
    authextra: dict | None = None


@dataclass(frozen=True)
class Challenge:
    authmethod: str
    extra: dict


@dataclass(frozen=True)
class Deny:
    reason: str
    message: str


FAILED = "wamp.error.authentication_failed"
# One message for every failed credential, so it tells no one which authids exist.
FAILED_MESSAGE = "authentication failed: unknown authid or wrong credentials"


# ABORT reason for an answer refused because too many are being verified (router/auth/throttle.py).
TOO_MANY_AUTHENTICATIONS = "courtyard.error.too_many_authentications"


def deny() -> Deny:
    return Deny(FAILED, FAILED_MESSAGE)
