"""A realm's definition: its URI, how clients may authenticate, and the limits sessions get."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class Realm:
    uri: str
    anonymous: bool = True  # anonymous authentication allowed
    anonymous_authrole: str = "anonymous"
    limits: Limits = field(default_factory=Limits)
    role_limits: dict[str, Limits] = field(default_factory=dict)  # per-authrole overrides

    def limits_for(self, authrole: str) -> Limits:
        return self.role_limits.get(authrole, self.limits)
