"""SQL of check-ins (one statement per method)."""

from __future__ import annotations

from datetime import date

import asyncpg

from shared.db import Database, delete_in_batches

# One row per member per Beijing day: concurrent taps race on the primary key and all but one
# insert nothing. The streak continues yesterday's; every ``$5``-th day of a streak earns the bonus.
_CHECK_IN = """
WITH streak AS (
    SELECT coalesce((SELECT streak FROM checkins WHERE member_id = $1 AND day = $2::date - 1), 0) + 1 AS n
)
INSERT INTO checkins (member_id, day, streak, points)
SELECT $1, $2, n, $3 + CASE WHEN n % $5 = 0 THEN $4 ELSE 0 END FROM streak
ON CONFLICT (member_id, day) DO NOTHING
RETURNING streak, points
"""

_RECENT = "SELECT day, streak, points FROM checkins WHERE member_id = $1 ORDER BY day DESC LIMIT $2"

_MOVE = """
UPDATE checkins c SET member_id = $2
WHERE c.member_id = $1 AND NOT EXISTS (SELECT 1 FROM checkins s WHERE s.member_id = $2 AND s.day = c.day)
"""


class CheckInRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def check_in(
        self, member_id: str, day: date, *, points: int, bonus: int, every: int
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_CHECK_IN, member_id, day, points, bonus, every)
        return row

    async def recent(self, member_id: str, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_RECENT, member_id, limit))

    async def move(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE, from_member, to_member)


# Retention (services/commerce/retention.py): a streak reads only yesterday's row and each check-in's
# points are in the ledger for good; older days are the member's calendar, kept
# COMMERCE_CHECKINS_RETENTION_DAYS.
CHECKINS_EXPIRED = "day < $1"


async def prune_checkins(db: Database, before: date) -> int:
    """Check-ins of Beijing days before ``before`` (walks ix_checkins_day)."""
    return await delete_in_batches(db, "checkins", CHECKINS_EXPIRED, before)
