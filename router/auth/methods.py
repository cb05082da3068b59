"""The authentication methods: anonymous, ticket, wampcra (salted or not), cryptosign."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from datetime import UTC, datetime

from autobahn.wamp.auth import compute_wcs
from twisted.internet import threads

from realms.realm import Realm, User
from realms.secrets import verify_secret
from router.auth import Challenge, Deny, Welcome, deny

# Per-process key for made-up salts: an unknown authid gets a stable salt, like a real user's.
_FAKE_SALT_KEY = os.urandom(32)


class Method:
    name = ""

    def __init__(self, realm: Realm) -> None:
        self.realm = realm

    @staticmethod
    def principal(details: dict) -> str:
        """Who the HELLO claims to be, as the failure throttle counts it (client text: it bounds it)."""
        authid = details.get("authid")
        return authid if isinstance(authid, str) else ""

    def hello(self, details: dict) -> Welcome | Challenge | Deny:
        raise NotImplementedError

    def authenticate(self, signature: str, extra: dict):
        return deny()


class Anonymous(Method):
    name = "anonymous"

    def hello(self, details: dict) -> Welcome:
        raw = secrets.token_hex(6).upper()  # a random authid, as in Crossbar.io
        return Welcome(f"{raw[0:4]}-{raw[4:8]}-{raw[8:12]}", self.realm.auth.anonymous_authrole, "anonymous")


class _ByAuthid(Method):
    """Methods where the client names itself in HELLO.Details.authid."""

    def hello(self, details: dict) -> Challenge | Deny:
        authid = details.get("authid")
        if not isinstance(authid, str) or not authid:
            return Deny("wamp.error.not_authorized", f"{self.name} authentication needs HELLO.Details.authid")
        self.authid = authid
        self.user: User | None = self.realm.users.get(authid)
        return self.challenge()

    def challenge(self) -> Challenge:
        raise NotImplementedError

    def welcome(self) -> Welcome:
        return Welcome(self.user.authid, self.user.role, self.name)


class Ticket(_ByAuthid):
    name = "ticket"

    def challenge(self) -> Challenge:
        return Challenge("ticket", {})

    def authenticate(self, signature: str, extra: dict):
        stored = self.user.ticket if self.user is not None else None
        d = threads.deferToThread(verify_secret, signature, stored)  # PBKDF2 stays off the reactor
        return d.addCallback(lambda ok: self.welcome() if ok else deny())


class WampCra(_ByAuthid):
    name = "wampcra"

    def challenge(self) -> Challenge:
        cra = self.user.wampcra if self.user is not None else None
        self.challenge_text = json.dumps({
            "authid": self.authid, "authrole": self.user.role if cra else "",
            "authmethod": "wampcra", "authprovider": "static", "nonce": secrets.token_urlsafe(16),
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        })
        extra = {"challenge": self.challenge_text}
        if cra is None:
            fake = hmac.new(_FAKE_SALT_KEY, self.authid.encode(), hashlib.sha256).digest()
            extra.update(salt=base64.b64encode(fake[:12]).decode(), iterations=1000, keylen=32)
        elif cra.salt is not None:
            extra.update(salt=cra.salt, iterations=cra.iterations, keylen=cra.keylen)
        return Challenge("wampcra", extra)

    def authenticate(self, signature: str, extra: dict) -> Welcome | Deny:
        cra = self.user.wampcra if self.user is not None else None
        if cra is None:
            return deny()
        expected = compute_wcs(cra.key.encode(), self.challenge_text.encode())
        return self.welcome() if hmac.compare_digest(signature.encode(), expected) else deny()


class CryptoSign(Method):
    """Ed25519: the client names its public key in HELLO.Details.authextra.pubkey and signs a random
    32-byte challenge. With `authextra.channel_binding: "tls-unique"` it signs the challenge XOR the
    TLS channel's id (SHA-256 of the client's Finished message, as Autobahn computes it), so that a
    signature made for one TLS connection is worthless on another (a man in the middle cannot relay it)."""

    name = "cryptosign"
    # () -> the connection's tls-unique id (32 bytes), or None without TLS; set by the session layer
    channel_id = staticmethod(lambda: None)

    @staticmethod
    def principal(details: dict) -> str:
        """The authid if named, else the public key the client signs with."""
        authid = details.get("authid")
        extra = details.get("authextra")
        pubkey = extra.get("pubkey") if isinstance(extra, dict) else None
        return authid if isinstance(authid, str) else f"pubkey:{pubkey}" if isinstance(pubkey, str) else ""

    def hello(self, details: dict) -> Challenge | Deny:
        extra = details.get("authextra") or {}
        pubkey = extra.get("pubkey") if isinstance(extra, dict) else None
        if not isinstance(pubkey, str) or len(pubkey) != 64:
            return Deny("wamp.error.not_authorized", "cryptosign needs HELLO.Details.authextra.pubkey (64 hex digits)")
        self.pubkey = pubkey.lower()
        authid = details.get("authid")
        self.user = None
        for user in self.realm.users.values():
            if self.pubkey in user.cryptosign and (authid is None or authid == user.authid):
                self.user = user
                break
        self.challenge = os.urandom(32)
        self.signed = self.challenge  # what the client must sign
        binding = extra.get("channel_binding")
        if binding is not None:
            if binding != "tls-unique":
                return Deny("wamp.error.not_authorized", "cryptosign channel_binding must be \"tls-unique\" or absent")
            channel = self.channel_id()
            if channel is None:
                return Deny("wamp.error.not_authorized", "cryptosign channel binding needs a TLS connection")
            self.signed = bytes(a ^ b for a, b in zip(self.challenge, channel, strict=True))
        return Challenge("cryptosign", {"challenge": self.challenge.hex(), "channel_binding": binding})

    def authenticate(self, signature: str, extra: dict) -> Welcome | Deny:
        if self.user is None:
            return deny()
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey

        try:
            signed = bytes.fromhex(signature)  # signature (64 bytes), optionally followed by what was signed
            if len(signed) not in (64, 96) or (len(signed) == 96 and signed[64:] != self.signed):
                return deny()
            VerifyKey(bytes.fromhex(self.pubkey)).verify(self.signed, signed[:64])
        except (ValueError, BadSignatureError, TypeError):
            return deny()
        return Welcome(self.user.authid, self.user.role, "cryptosign", authextra={"pubkey": self.pubkey})


METHODS: dict[str, type[Method]] = {m.name: m for m in (Anonymous, Ticket, WampCra, CryptoSign)}
