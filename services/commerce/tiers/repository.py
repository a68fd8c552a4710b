"""SQL of member tiers (one statement per method)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_GET = "SELECT tier, spend_12m_fen, period_end FROM member_tiers WHERE member_id = $1 FOR UPDATE"

_SET = """
INSERT INTO member_tiers AS t (member_id, tier, spend_12m_fen, period_end, changed_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (member_id) DO UPDATE SET
    tier = EXCLUDED.tier, spend_12m_fen = EXCLUDED.spend_12m_fen, period_end = EXCLUDED.period_end,
    changed_at = CASE WHEN t.tier <> EXCLUDED.tier THEN EXCLUDED.changed_at ELSE t.changed_at END,
    updated_at = now()
"""

_TIER_OF = "SELECT tier FROM member_tiers WHERE member_id = $1"

_DUE = """
SELECT member_id FROM member_tiers WHERE period_end <= $1 ORDER BY period_end LIMIT $2 FOR UPDATE SKIP LOCKED
"""

_MOVE = """
DELETE FROM member_tiers WHERE member_id = $1
"""


class TierRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def get_for_update(self, member_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_GET, member_id)
        return row

    async def tier_of(self, member_id: str) -> str | None:
        value = await self.conn.fetchval(_TIER_OF, member_id)
        return str(value) if value is not None else None

    async def set(self, member_id: str, tier: str, spend_fen: int, period_end: datetime, at: datetime) -> None:
        await self.conn.execute(_SET, member_id, tier, spend_fen, period_end, at)

    async def due(self, now: datetime, limit: int) -> list[str]:
        return [r["member_id"] for r in await self.conn.fetch(_DUE, now, limit)]

    async def forget(self, member_id: str) -> None:
        """A merged-away member's tier: the survivor's is recomputed from the orders it now has."""
        await self.conn.execute(_MOVE, member_id)
