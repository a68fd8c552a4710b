"""SQL of the points mall (one statement per method).

Lock order in every unit of work that touches them: the redemption row, then the reward row, then
the member's points account (PointsService). Reserving and releasing both follow it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

_LIST = """
SELECT reward_id, title, cost_points, kind, remaining FROM rewards WHERE active ORDER BY cost_points, reward_id
"""

_CREATE = """
INSERT INTO rewards (reward_id, title, kind, cost_points, remaining, coupon) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (reward_id) DO NOTHING
RETURNING reward_id
"""

_REWARD = "SELECT reward_id, title, kind, cost_points, remaining, coupon, active FROM rewards WHERE reward_id = $1"

# The stock guard: a conditional UPDATE, so concurrent redemptions never take the last item twice.
_TAKE_STOCK = """
UPDATE rewards SET remaining = remaining - 1 WHERE reward_id = $1 AND active AND remaining > 0
RETURNING reward_id, title, kind, cost_points, coupon
"""

_RETURN_STOCK = "UPDATE rewards SET remaining = remaining + 1 WHERE reward_id = $1"

_OPEN = """
INSERT INTO redemptions (redemption_id, member_id, reward_id, idempotency_key, state, points)
VALUES ($1, $2, $3, $4, 'reserved', $5)
ON CONFLICT (member_id, idempotency_key) DO NOTHING
RETURNING redemption_id
"""

_BY_KEY = """
SELECT r.redemption_id, r.member_id, r.reward_id, r.state, r.points, r.coupon_id, r.failure, r.created_at,
       w.kind, c.title AS coupon_title, c.expires_at AS coupon_expires_at
FROM redemptions r JOIN rewards w ON w.reward_id = r.reward_id LEFT JOIN coupons c ON c.coupon_id = r.coupon_id
WHERE r.member_id = $1 AND r.idempotency_key = $2
"""

_SET_POINTS = "UPDATE redemptions SET points = $2 WHERE redemption_id = $1"

_COMMIT = """
UPDATE redemptions SET state = 'committed', coupon_id = $2, updated_at = now()
WHERE redemption_id = $1 AND state = 'reserved'
RETURNING true
"""

_RELEASE = """
UPDATE redemptions SET state = 'released', failure = $2, updated_at = now()
WHERE redemption_id = $1 AND state = 'reserved'
RETURNING reward_id, member_id
"""

_STALE = """
SELECT redemption_id, member_id, reward_id, kind, points FROM redemptions JOIN rewards USING (reward_id)
WHERE state = 'reserved' AND redemptions.created_at <= $1
ORDER BY redemptions.created_at LIMIT $2
"""

_COUPON_BY_CLAIM = "SELECT coupon_id, title, expires_at FROM coupons WHERE claim_key = $1"

_OF_MEMBER = """
SELECT r.redemption_id, r.reward_id, w.title, r.state, r.points, r.coupon_id, r.created_at
FROM redemptions r JOIN rewards w ON w.reward_id = r.reward_id
WHERE r.member_id = $1 ORDER BY r.created_at DESC LIMIT $2
"""

_MOVE = """
UPDATE redemptions r SET member_id = $2
WHERE r.member_id = $1
  AND NOT EXISTS (SELECT 1 FROM redemptions s WHERE s.member_id = $2 AND s.idempotency_key = r.idempotency_key)
"""


class RewardRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def active(self) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_LIST))

    async def create(
        self, reward_id: str, title: str, kind: str, cost_points: int, stock: int, coupon: dict[str, Any] | None
    ) -> bool:
        return await self.conn.fetchval(_CREATE, reward_id, title, kind, cost_points, stock, coupon) is not None

    async def reward(self, reward_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_REWARD, reward_id)
        return row

    async def take_stock(self, reward_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_TAKE_STOCK, reward_id)
        return row

    async def return_stock(self, reward_id: str) -> None:
        await self.conn.execute(_RETURN_STOCK, reward_id)

    async def open(self, redemption_id: str, member_id: str, reward_id: str, key: str, points: int) -> bool:
        return await self.conn.fetchval(_OPEN, redemption_id, member_id, reward_id, key, points) is not None

    async def by_key(self, member_id: str, key: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_BY_KEY, member_id, key)
        return row

    async def set_points(self, redemption_id: str, points: int) -> None:
        await self.conn.execute(_SET_POINTS, redemption_id, points)

    async def commit(self, redemption_id: str, coupon_id: str | None) -> bool:
        return await self.conn.fetchval(_COMMIT, redemption_id, coupon_id) is not None

    async def release(self, redemption_id: str, failure: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_RELEASE, redemption_id, failure[:500])
        return row

    async def stale(self, before: datetime, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_STALE, before, limit))

    async def coupon_by_claim(self, claim_key: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_COUPON_BY_CLAIM, claim_key)
        return row

    async def of_member(self, member_id: str, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_OF_MEMBER, member_id, limit))

    async def move(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE, from_member, to_member)
