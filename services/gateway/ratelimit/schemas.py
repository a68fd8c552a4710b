"""Limits, the buckets a request is counted in, and a bucket's verdict."""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Limit:
    """``limit`` requests per ``period`` seconds for one bucket (``name``) of keys."""

    name: str
    limit: int
    period: float = 60.0

    @property
    def interval(self) -> float:
        return self.period / self.limit


@dataclass(frozen=True)
class ApiLimits:
    ip: Limit
    login_ip: Limit
    member: Limit
    events: Limit
    writes: Limit

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> ApiLimits:
        return cls(
            ip=Limit("ip", s.rate_ip_per_minute),
            login_ip=Limit("login-ip", s.rate_login_ip_per_minute),
            member=Limit("member", s.rate_member_per_minute),
            events=Limit("events", s.rate_events_per_minute),
            writes=Limit("writes", s.rate_writes_per_minute),
        )


@dataclass(frozen=True)
class Bucket:
    """One bucket a request is counted in: the limit, whose key (an address, a member id), and
    who that is in the 429's words."""

    limit: Limit
    key: str
    who: str

    @property
    def row_key(self) -> str:
        return f"{self.limit.name}:{self.key}"[:200]


@dataclass(frozen=True)
class Decision:
    bucket: Bucket
    allowed: bool
    retry_after: int  # seconds; 0 when allowed
