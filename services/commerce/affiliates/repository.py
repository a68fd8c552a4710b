"""SQL of affiliate attributions (one statement per method)."""

from __future__ import annotations

from typing import Any

import asyncpg

# RETURNING (xmax = 0): true when this statement inserted the row (the first attribution).
_RECORD = """
INSERT INTO affiliate_attributions AS a (order_id, shop_appid, buyer_member_id, sharer_openid, sharer_unionid,
    sharer_member_id, sharer_nickname, sale_channel, account_type, commission_fen, commission_settled, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (order_id) DO UPDATE SET
    buyer_member_id = coalesce(EXCLUDED.buyer_member_id, a.buyer_member_id),
    sharer_member_id = coalesce(EXCLUDED.sharer_member_id, a.sharer_member_id),
    sharer_nickname = coalesce(EXCLUDED.sharer_nickname, a.sharer_nickname),
    commission_fen = EXCLUDED.commission_fen, commission_settled = EXCLUDED.commission_settled,
    detail = EXCLUDED.detail, updated_at = now()
RETURNING (xmax = 0) AS inserted
"""

_BY_SHARER = """
SELECT order_id, shop_appid, buyer_member_id, sharer_nickname, sale_channel, account_type, commission_fen,
       commission_settled, created_at
FROM affiliate_attributions WHERE sharer_member_id = $1 ORDER BY created_at DESC LIMIT $2
"""

_OF_ORDER = "SELECT * FROM affiliate_attributions WHERE order_id = $1"

_MOVE_SHARER = "UPDATE affiliate_attributions SET sharer_member_id = $2 WHERE sharer_member_id = $1"
_MOVE_BUYER = "UPDATE affiliate_attributions SET buyer_member_id = $2 WHERE buyer_member_id = $1"


class AffiliateRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def record(self, v: dict[str, Any]) -> bool:
        return bool(
            await self.conn.fetchval(
                _RECORD,
                v["order_id"],
                v["shop_appid"],
                v["buyer_member_id"],
                v["sharer_openid"],
                v["sharer_unionid"],
                v["sharer_member_id"],
                v["sharer_nickname"],
                v["sale_channel"],
                v["account_type"],
                v["commission_fen"],
                v["commission_settled"],
                v["detail"],
            )
        )

    async def by_sharer(self, member_id: str, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_BY_SHARER, member_id, limit))

    async def of_order(self, order_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_OF_ORDER, order_id)
        return row

    async def move_sharer(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE_SHARER, from_member, to_member)

    async def move_buyer(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE_BUYER, from_member, to_member)
