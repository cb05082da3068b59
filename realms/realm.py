"""A realm's definition: its URI, how clients may authenticate, its users and roles, and the limits
sessions get."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from realms.authorization import Role


@dataclass(frozen=True)
class Window:
    """`limit` requests per `duration` seconds (used for both rate and quota)."""

    limit: int
    duration: float


@dataclass(frozen=True)
class Limits:
    rate: Window | None = None
    quota: Window | None = None
    expires_in: float | None = None  # session lifetime, seconds
    idle_timeout: float | None = None  # close sessions silent this long, seconds


@dataclass(frozen=True)
class CraSecret:
    """WAMP-CRA: the HMAC key. Unsalted: the secret itself; salted: PBKDF2(secret, salt) in base64,
    as Autobahn's `derive_key` computes it — the plain secret is then never stored."""

    key: str
    salt: str | None = None
    iterations: int = 1000
    keylen: int = 32


@dataclass(frozen=True)
class User:
    authid: str
    role: str
    ticket: str | None = None  # a salted hash (see realms/secrets.py), never the plain ticket
    wampcra: CraSecret | None = None
    cryptosign: tuple[str, ...] = ()  # Ed25519 public keys, hex

    def public(self) -> dict:
        """What the admin API shows of a user: never a secret or a key derived from one."""
        methods = [m for m, v in (("ticket", self.ticket), ("wampcra", self.wampcra),
                                  ("cryptosign", self.cryptosign)) if v]
        return {"authid": self.authid, "role": self.role, "authmethods": methods,
                "cryptosign": list(self.cryptosign)}


@dataclass(frozen=True)
class Throttle:
    """Guards the verification of answers to CHALLENGEs (router/auth/throttle.py). Failures count per
    (address, authid): others behind the same address (a NAT, a proxy) and anonymous sessions are not
    affected, unless the address fails across many authids (max_failures_per_address).
    The in-flight caps bound the work queued for the hashing threads; they hold even when
    failures are not counted (max_failures 0, `throttle: false`)."""

    max_failures: int = 5  # failed authentications of one (address, authid) within window ... (0: not counted)
    window: float = 60.0
    block_for: float = 30.0  # ... refuse that (address, authid) this long
    max_failures_per_address: int = 50  # failures from one address across all authids within window
    # (a spray of names) → that address may not authenticate (anonymous aside) for block_for; 0: no such cap.
    # The config's default is 10 × max_failures.
    max_in_flight_per_address: int = 4  # answers being verified at once, per client address ...
    max_in_flight: int = 32  # ... and in the whole node
    max_waiting_per_address: int = 32  # answers over an in-flight cap that wait for a slot (at most 5 s), per
    # address, instead of being refused at once (many clients behind one NAT or proxy); 0: refused at once


@dataclass(frozen=True)
class AuthConfig:
    anonymous: bool = True
    anonymous_authrole: str = "anonymous"
    ticket: bool = False
    wampcra: bool = False
    cryptosign: bool = False
    cookie: bool = False
    cookie_max_age: float = 86400.0
    throttle: Throttle = field(default_factory=Throttle)

    def enabled(self) -> list[str]:
        return [m for m in ("anonymous", "ticket", "wampcra", "cryptosign", "cookie") if getattr(self, m)]


@dataclass(frozen=True)
class SessionProcessConfig:
    """`session_process`: the class every session of the realm gets a process of (router/processes.py),
    imported when the config is read, so a bad path is a config error and not a failure at join."""

    cls: str  # "package.module:Class", as written
    factory: Any = field(default=None, compare=False, repr=False)  # the imported class
    start: str = "on_join"  # or "on_demand": at the session's first courtyard.process.call/cast
    mailbox: int = 100  # requests waiting; one more gets courtyard.error.process_busy
    call_timeout: float = 15.0  # seconds a call may wait and run before wamp.error.timeout
    restart_max: int = 3  # restarts allowed within restart_within seconds; one more failure stops it
    restart_within: float = 60.0
    then: str = "stop"  # after too many restarts: "stop" the process, or "kill_session" as well


@dataclass
class Realm:
    uri: str
    auth: AuthConfig = field(default_factory=AuthConfig)
    users: dict[str, User] = field(default_factory=dict)
    # None: no authorization configured, every role may do everything (the open default realm).
    roles: dict[str, Role] | None = None
    limits: Limits = field(default_factory=Limits)
    definition: dict = field(default_factory=dict, compare=False)  # as written (YAML or admin API)
    join_roles: frozenset[str] | None = None  # only these authroles may join (the admin realm); None: any
    session_process: SessionProcessConfig | None = None  # a process per session (router/processes.py)

    @property
    def anonymous(self) -> bool:
        return self.auth.anonymous

    @property
    def anonymous_authrole(self) -> str:
        return self.auth.anonymous_authrole

    def limits_for(self, authrole: str) -> Limits:
        role = self.roles.get(authrole) if self.roles else None
        return role.limits if role is not None and role.limits is not None else self.limits

    def has_timeouts(self) -> bool:
        """Whether any session here can expire or idle out (else the sweep skips the realm)."""
        every = [self.limits, *(r.limits for r in (self.roles or {}).values() if r.limits is not None)]
        return any(lim.expires_in is not None or lim.idle_timeout is not None for lim in every)

    def role(self, authrole: str) -> Role | None:
        """The role's permissions; None means no check (authorization not configured)."""
        if self.roles is None:
            return None
        role = self.roles.get(authrole)
        return role if role is not None else Role(authrole)  # unknown role: no permissions
