"""Limit counters in PostgreSQL: marketing caps per member, and each (app, WeChat API)'s budget.

Every check-and-count is ONE statement on a row lock, so two replicas never both take the last unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from shared.db import Database, delete_in_batches

_CAP_TAKE = """
INSERT INTO marketing_caps AS c (member_id, week, week_count, day, day_count)
VALUES ($1, $2, 1, $3, 1)
ON CONFLICT (member_id, week) DO UPDATE SET
    week_count = c.week_count + 1,
    day_count = CASE WHEN c.day = EXCLUDED.day THEN c.day_count + 1 ELSE 1 END,
    day = EXCLUDED.day
WHERE c.week_count < $5 AND (c.day <> EXCLUDED.day OR c.day_count < $4)
RETURNING true
"""

_CAP_REACHED = """
SELECT COALESCE(bool_or(week_count >= $5 OR (day = $3 AND day_count >= $4)), false)
FROM marketing_caps WHERE member_id = $1 AND week = $2
"""


class CapRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def take(self, member_id: str, week: date, day: date, per_day: int, per_week: int) -> bool:
        return bool(await self.conn.fetchval(_CAP_TAKE, member_id, week, day, per_day, per_week))

    async def reached(self, member_id: str, week: date, day: date, per_day: int, per_week: int) -> bool:
        return bool(await self.conn.fetchval(_CAP_REACHED, member_id, week, day, per_day, per_week))


# A permit: the app's daily count for this API goes up by one and the next free slot of its pace
# (one call every 1/rate seconds, shared by every replica) is reserved, both on the database clock.
# No row comes back when the API is paused (45009/45011) or today's quota is used up.
_PERMIT = """
INSERT INTO api_budgets AS b (appid, api, day, used, tat)
VALUES ($1, $2, (clock_timestamp() AT TIME ZONE 'Asia/Shanghai')::date, 1,
        clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (appid, api) DO UPDATE SET
    used = CASE WHEN b.day = EXCLUDED.day THEN b.used + 1 ELSE 1 END,
    day = EXCLUDED.day,
    tat = GREATEST(b.tat, clock_timestamp()) + make_interval(secs => $3)
WHERE (b.paused_until IS NULL OR b.paused_until <= clock_timestamp())
  AND (b.day <> EXCLUDED.day OR b.used < $4)
RETURNING GREATEST(0, EXTRACT(EPOCH FROM (b.tat - make_interval(secs => $3) - clock_timestamp())))::float8
"""

_REFUSAL = """
SELECT CASE
    WHEN paused_until > clock_timestamp() THEN paused_until
    ELSE ((date_trunc('day', clock_timestamp() AT TIME ZONE 'Asia/Shanghai') + interval '1 day')
          AT TIME ZONE 'Asia/Shanghai')
END AS until,
paused_until > clock_timestamp() AS paused
FROM api_budgets WHERE appid = $1 AND api = $2
"""

_PAUSE_SECONDS = """
INSERT INTO api_budgets AS b (appid, api, day, used, tat, paused_until)
VALUES ($1, $2, (clock_timestamp() AT TIME ZONE 'Asia/Shanghai')::date, 0, clock_timestamp(),
        clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (appid, api) DO UPDATE SET paused_until = GREATEST(b.paused_until, EXCLUDED.paused_until)
RETURNING paused_until
"""

_PAUSE_TO_MIDNIGHT = """
INSERT INTO api_budgets AS b (appid, api, day, used, tat, paused_until)
VALUES ($1, $2, (clock_timestamp() AT TIME ZONE 'Asia/Shanghai')::date, 0, clock_timestamp(),
        (date_trunc('day', clock_timestamp() AT TIME ZONE 'Asia/Shanghai') + interval '1 day')
            AT TIME ZONE 'Asia/Shanghai')
ON CONFLICT (appid, api) DO UPDATE SET paused_until = GREATEST(b.paused_until, EXCLUDED.paused_until)
RETURNING paused_until
"""


@dataclass(frozen=True)
class Permit:
    granted: bool
    wait: float = 0.0  # seconds until the reserved slot
    until: datetime | None = None  # when refused: when to try again
    reason: str | None = None  # when refused: "paused" (45009/45011) or "quota_exhausted" (our count)


class BudgetRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def permit(self, appid: str, api: str, interval: float, quota: int) -> Permit:
        wait = await self.conn.fetchval(_PERMIT, appid, api, interval, quota)
        if wait is not None:
            return Permit(True, float(wait))
        row = await self.conn.fetchrow(_REFUSAL, appid, api)
        if row is None:
            return Permit(False, reason="quota_exhausted")
        return Permit(False, until=row["until"], reason="paused" if row["paused"] else "quota_exhausted")

    async def pause_for(self, appid: str, api: str, seconds: float) -> datetime:
        until: datetime = await self.conn.fetchval(_PAUSE_SECONDS, appid, api, seconds)
        return until

    async def pause_until_midnight(self, appid: str, api: str) -> datetime:
        until: datetime = await self.conn.fetchval(_PAUSE_TO_MIDNIGHT, appid, api)
        return until


# Retention (services/notify/retention.py): a cap row counts one Beijing week; only the current
# week's is ever read.
CAPS_PAST = "week < $1"


async def prune_caps(db: Database, before_week: date) -> int:
    """Marketing-cap rows of weeks before ``before_week`` (walks ix_marketing_caps_week)."""
    return await delete_in_batches(db, "marketing_caps", CAPS_PAST, before_week)
