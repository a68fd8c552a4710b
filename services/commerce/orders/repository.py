"""SQL of the order mirror (one statement per method).

The order upsert is the first statement of every unit of work about an order: its row lock makes
two events of one order (a push and the reconcile, an order event and an after-sale event) apply
one after the other. Transitions that must be announced once are conditional writes whose
``RETURNING`` says whether this transaction made them (a milestone insert, ``outcome IS NULL``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

# A snapshot older than the stored one (two fetches racing) does not overwrite it. The buyer, once
# known, stays: a merge moves the order to the survivor explicitly, and a snapshot resolved before
# the merge must not move it back.
_UPSERT = """
INSERT INTO orders AS o (order_id, shop_appid, member_id, openid, unionid, status, order_price_fen, is_gift,
                         present_order_id, title, item_count, lines, detail, shop_create_time, shop_update_time,
                         paid_at, settled_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (order_id) DO UPDATE SET
    member_id = coalesce(o.member_id, EXCLUDED.member_id),
    openid = coalesce(EXCLUDED.openid, o.openid),
    unionid = coalesce(EXCLUDED.unionid, o.unionid),
    status = CASE WHEN EXCLUDED.shop_update_time >= o.shop_update_time THEN EXCLUDED.status ELSE o.status END,
    order_price_fen = EXCLUDED.order_price_fen,
    title = EXCLUDED.title,
    item_count = EXCLUDED.item_count,
    lines = CASE WHEN EXCLUDED.shop_update_time >= o.shop_update_time THEN EXCLUDED.lines ELSE o.lines END,
    detail = CASE WHEN EXCLUDED.shop_update_time >= o.shop_update_time THEN EXCLUDED.detail ELSE o.detail END,
    shop_update_time = greatest(o.shop_update_time, EXCLUDED.shop_update_time),
    paid_at = coalesce(o.paid_at, EXCLUDED.paid_at),
    settled_at = coalesce(o.settled_at, EXCLUDED.settled_at),
    updated_at = now()
RETURNING member_id, status
"""

_HISTORY = """
INSERT INTO order_status_history (order_id, status, shop_update_time, source) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""

_REACH = """
INSERT INTO order_milestones (order_id, milestone)
SELECT $1, m FROM unnest($2::text[]) AS m
ON CONFLICT DO NOTHING
RETURNING milestone
"""

_ADD_POINTS = "UPDATE orders SET points = points + $2 WHERE order_id = $1"

_EARLIER_PAID = """
SELECT EXISTS (SELECT 1 FROM orders WHERE member_id = $1 AND order_id <> $2 AND paid_at IS NOT NULL AND paid_at <= $3)
"""

_OPEN_AFTERSALE = """
INSERT INTO aftersales (after_sale_order_id, order_id, shop_appid, member_id, openid, type, status, amount_fen,
                        product_id, sku_id, count, shop_update_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (after_sale_order_id) DO NOTHING
RETURNING true
"""

_UPDATE_AFTERSALE = """
UPDATE aftersales SET status = $2, amount_fen = $3, shop_update_time = $4, updated_at = now()
WHERE after_sale_order_id = $1 AND shop_update_time <= $4
"""

_CLOSE_AFTERSALE = """
UPDATE aftersales SET outcome = $2, updated_at = now()
WHERE after_sale_order_id = $1 AND outcome IS NULL
RETURNING true
"""

_REFUNDED = """
UPDATE orders SET refunded_fen = (
    SELECT coalesce(sum(amount_fen), 0) FROM aftersales WHERE order_id = $1 AND outcome = 'refunded'
) WHERE order_id = $1
RETURNING refunded_fen
"""

# The member's orders, newest first: bought, and gifts received (a recipient earns no points).
_MEMBER_ORDERS = """
SELECT o.order_id, o.status, o.order_price_fen AS paid_fen, o.is_gift,
       CASE WHEN o.member_id = $1 THEN o.points ELSE 0 END AS points
FROM orders o
WHERE o.member_id = $1
   OR o.order_id IN (SELECT g.order_id FROM gifts g WHERE g.recipient_member_id = $1)
ORDER BY o.shop_create_time DESC, o.order_id DESC
LIMIT $2
"""

_ADMIN_ORDERS = """
SELECT o.order_id, o.status, o.order_price_fen AS paid_fen, o.refunded_fen, o.is_gift, o.present_order_id,
       o.points, o.title, o.item_count, o.paid_at, o.settled_at, to_timestamp(o.shop_create_time) AS created_at,
       CASE WHEN o.member_id = $1 THEN 'buyer' ELSE 'recipient' END AS role,
       a.sharer_member_id, a.sharer_nickname, a.commission_fen
FROM orders o LEFT JOIN affiliate_attributions a ON a.order_id = o.order_id
WHERE o.member_id = $1
   OR o.order_id IN (SELECT g.order_id FROM gifts g WHERE g.recipient_member_id = $1)
ORDER BY o.shop_create_time DESC, o.order_id DESC
LIMIT $2
"""

_HISTORY_OF = """
SELECT status, shop_update_time, source, recorded_at FROM order_status_history WHERE order_id = $1 ORDER BY id
"""

_ORDER = "SELECT * FROM orders WHERE order_id = $1"

_AFTERSALES_OF = """
SELECT after_sale_order_id, type, status, amount_fen, sku_id, count, outcome, updated_at
FROM aftersales WHERE order_id = $1 ORDER BY created_at
"""

_SPEND_12M = """
SELECT coalesce(sum(order_price_fen - refunded_fen), 0)::bigint FROM orders
WHERE member_id = $1 AND paid_at > $2
"""

_MOVE_ORDERS = "UPDATE orders SET member_id = $2 WHERE member_id = $1"
_MOVE_AFTERSALES = "UPDATE aftersales SET member_id = $2 WHERE member_id = $1"

_CURSOR = "SELECT position FROM sync_cursors WHERE name = $1"
_SET_CURSOR = """
INSERT INTO sync_cursors (name, position) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET position = greatest(sync_cursors.position, EXCLUDED.position), updated_at = now()
"""

_TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1)"


class OrderRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def upsert(self, values: dict[str, Any]) -> asyncpg.Record:
        row: asyncpg.Record = await self.conn.fetchrow(
            _UPSERT,
            values["order_id"],
            values["shop_appid"],
            values["member_id"],
            values["openid"],
            values["unionid"],
            values["status"],
            values["order_price_fen"],
            values["is_gift"],
            values["present_order_id"],
            values["title"],
            values["item_count"],
            values["lines"],
            values["detail"],
            values["shop_create_time"],
            values["shop_update_time"],
            values["paid_at"],
            values["settled_at"],
        )
        return row

    async def record_status(self, order_id: str, status: int, update_time: int, source: str) -> None:
        await self.conn.execute(_HISTORY, order_id, status, update_time, source[:64])

    async def reach(self, order_id: str, milestones: list[str]) -> set[str]:
        """The milestones this call reached first (the others were reached before)."""
        return {r["milestone"] for r in await self.conn.fetch(_REACH, order_id, milestones)}

    async def add_points(self, order_id: str, points: int) -> None:
        await self.conn.execute(_ADD_POINTS, order_id, points)

    async def paid_before(self, member_id: str, order_id: str, paid_at: datetime) -> bool:
        return bool(await self.conn.fetchval(_EARLIER_PAID, member_id, order_id, paid_at))

    async def open_aftersale(self, values: dict[str, Any]) -> bool:
        row = await self.conn.fetchval(
            _OPEN_AFTERSALE,
            values["after_sale_order_id"],
            values["order_id"],
            values["shop_appid"],
            values["member_id"],
            values["openid"],
            values["type"],
            values["status"],
            values["amount_fen"],
            values["product_id"],
            values["sku_id"],
            values["count"],
            values["shop_update_time"],
        )
        return row is not None

    async def update_aftersale(self, after_sale_order_id: str, status: str, amount_fen: int, update_time: int) -> None:
        await self.conn.execute(_UPDATE_AFTERSALE, after_sale_order_id, status, amount_fen, update_time)

    async def close_aftersale(self, after_sale_order_id: str, outcome: str) -> bool:
        """True when this call closed it (an after-sale closes once)."""
        return await self.conn.fetchval(_CLOSE_AFTERSALE, after_sale_order_id, outcome) is not None

    async def refresh_refunded(self, order_id: str) -> int:
        return int(await self.conn.fetchval(_REFUNDED, order_id) or 0)

    async def member_orders(self, member_id: str, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_MEMBER_ORDERS, member_id, limit))

    async def admin_orders(self, member_id: str, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_ADMIN_ORDERS, member_id, limit))

    async def order(self, order_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_ORDER, order_id)
        return row

    async def history(self, order_id: str) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_HISTORY_OF, order_id))

    async def aftersales_of(self, order_id: str) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_AFTERSALES_OF, order_id))

    async def spend_since(self, member_id: str, since: datetime) -> int:
        """Paid spend (price minus refunds) since ``since``; a payment the shop's clock stamped a
        little ahead of ours counts too."""
        return int(await self.conn.fetchval(_SPEND_12M, member_id, since))

    async def move_orders(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE_ORDERS, from_member, to_member)

    async def move_aftersales(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE_AFTERSALES, from_member, to_member)

    async def cursor(self, name: str) -> int | None:
        value = await self.conn.fetchval(_CURSOR, name)
        return int(value) if value is not None else None

    async def set_cursor(self, name: str, position: int) -> None:
        await self.conn.execute(_SET_CURSOR, name, position)

    async def try_lock(self, key: int) -> bool:
        """A transaction-scoped advisory lock, without waiting: replicas take turns at a job."""
        return bool(await self.conn.fetchval(_TRY_LOCK, key))
