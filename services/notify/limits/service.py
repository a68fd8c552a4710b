"""Marketing limits: quiet hours (Beijing time) and per-member caps per Beijing day and week.

Both read the service's clock (``NotifyDeps.clock``) so tests can move time; the counters live in
PostgreSQL (``limits/repository.py``) so they hold across replicas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from services.notify.limits.repository import CapRepository

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
_WINDOW = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])$")


def beijing(now: datetime) -> datetime:
    return now.astimezone(BEIJING)


def beijing_day(now: datetime) -> date:
    return beijing(now).date()


def beijing_week(now: datetime) -> date:
    """The Monday that starts the Beijing week of ``now``."""
    d = beijing_day(now)
    return d - timedelta(days=d.weekday())


@dataclass(frozen=True)
class QuietHours:
    """A Beijing-time window (``22:00-08:00``; may wrap midnight) when marketing waits."""

    start: time | None
    end: time | None

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        text = text.strip()
        if not text:
            return cls(None, None)
        m = _WINDOW.match(text)
        if not m:
            raise ValueError(f"quiet hours must be HH:MM-HH:MM in Beijing time or empty, not {text!r}")
        start, end = time(int(m[1]), int(m[2])), time(int(m[3]), int(m[4]))
        if start == end:
            raise ValueError("quiet hours must not start and end at the same time")
        return cls(start, end)

    def ends_at(self, now: datetime) -> datetime | None:
        """When the quiet window holding ``now`` ends, or None when ``now`` is not in one."""
        if self.start is None or self.end is None:
            return None
        local = beijing(now)
        t = local.time()
        if self.start < self.end:
            inside = self.start <= t < self.end
        else:
            inside = t >= self.start or t < self.end
        if not inside:
            return None
        end = datetime.combine(local.date(), self.end, BEIJING)
        if end <= local:
            end += timedelta(days=1)
        return end


@dataclass(frozen=True)
class Caps:
    per_day: int
    per_week: int


class CapService:
    def __init__(self, caps: CapRepository, limits: Caps) -> None:
        self.caps = caps
        self.limits = limits

    async def take(self, member_id: str, now: datetime) -> bool:
        """Count one marketing message for the member, or False when a cap is reached (nothing counted)."""
        if self.limits.per_day < 1 or self.limits.per_week < 1:
            return False
        return await self.caps.take(
            member_id, beijing_week(now), beijing_day(now), self.limits.per_day, self.limits.per_week
        )

    async def reached(self, member_id: str, now: datetime) -> bool:
        if self.limits.per_day < 1 or self.limits.per_week < 1:
            return True
        return await self.caps.reached(
            member_id, beijing_week(now), beijing_day(now), self.limits.per_day, self.limits.per_week
        )
