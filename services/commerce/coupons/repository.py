"""SQL of coupons (one statement per method)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# The claim key is unique: a second claim of the same key inserts nothing (the claim limit).
_ISSUE = """
INSERT INTO coupons (coupon_id, member_id, kind, title, discount_fen, min_spend_fen, state, claim_key,
                     shop_coupon_id, order_id, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, 'available', $7, $8, $9, $10, $11)
ON CONFLICT (claim_key) DO NOTHING
RETURNING coupon_id
"""

# The shop reported a use of its coupon ``shop_coupon_id``: the member's oldest-expiring available
# coupon of that shop coupon is the one used. Keyed by the shop's user_coupon_id so a replay finds it.
_USE = """
UPDATE coupons SET state = 'used', used_at = $3, used_order_id = $4, shop_user_coupon_id = $5
WHERE coupon_id = (
    SELECT coupon_id FROM coupons
    WHERE member_id = $1 AND shop_coupon_id = $2 AND state = 'available'
      AND NOT EXISTS (SELECT 1 FROM coupons WHERE shop_user_coupon_id = $5)
    ORDER BY expires_at, coupon_id
    LIMIT 1
    FOR UPDATE
)
RETURNING coupon_id
"""

_UNUSE = """
UPDATE coupons SET state = 'available', used_at = NULL, used_order_id = NULL, shop_user_coupon_id = NULL
WHERE shop_user_coupon_id = $1 AND state = 'used'
RETURNING coupon_id
"""

_EXPIRE_DUE = """
UPDATE coupons SET state = 'expired'
WHERE coupon_id IN (SELECT coupon_id FROM coupons WHERE state = 'available' AND expires_at <= $1 LIMIT $2)
"""

_OF_MEMBER = """
SELECT coupon_id, title, CASE WHEN state = 'available' AND expires_at <= $2 THEN 'expired' ELSE state END AS state,
       expires_at, kind, discount_fen, min_spend_fen
FROM coupons WHERE member_id = $1
ORDER BY issued_at DESC, coupon_id
LIMIT $3
"""

# The coupon an order's reminder already got (the reminder's replay answers it again).
_FOR_ORDER = """
SELECT coupon_id, title, state, expires_at, kind, discount_fen, min_spend_fen
FROM coupons WHERE member_id = $1 AND kind = $2 AND order_id = $3
ORDER BY issued_at LIMIT 1
"""

_MOVE = "UPDATE coupons SET member_id = $2 WHERE member_id = $1"


class CouponRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def issue(
        self,
        coupon_id: str,
        member_id: str,
        *,
        kind: str,
        title: str,
        discount_fen: int,
        min_spend_fen: int,
        claim_key: str,
        shop_coupon_id: str | None,
        order_id: str | None,
        at: datetime,
        expires_at: datetime,
    ) -> bool:
        value = await self.conn.fetchval(
            _ISSUE,
            coupon_id,
            member_id,
            kind,
            title,
            discount_fen,
            min_spend_fen,
            claim_key,
            shop_coupon_id,
            order_id,
            at,
            expires_at,
        )
        return value is not None

    async def use(
        self, member_id: str, shop_coupon_id: str, user_coupon_id: str, order_id: str | None, at: datetime
    ) -> str | None:
        value = await self.conn.fetchval(_USE, member_id, shop_coupon_id, at, order_id, user_coupon_id)
        return str(value) if value is not None else None

    async def unuse(self, user_coupon_id: str) -> str | None:
        value = await self.conn.fetchval(_UNUSE, user_coupon_id)
        return str(value) if value is not None else None

    async def expire_due(self, now: datetime, limit: int) -> int:
        return int((await self.conn.execute(_EXPIRE_DUE, now, limit)).split()[-1])

    async def of_member(self, member_id: str, now: datetime, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_OF_MEMBER, member_id, now, limit))

    async def for_order(self, member_id: str, kind: str, order_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_FOR_ORDER, member_id, kind, order_id)
        return row

    async def move(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE, from_member, to_member)
