"""Orders created and not yet paid: each gets at most one reminder."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Database, delete_in_batches

_WATCH = """
INSERT INTO abandoned_orders (order_id, member_id, title, paid_fen, due_at, state)
VALUES ($1, $2, $3, $4, $5, 'waiting') ON CONFLICT (order_id) DO NOTHING
"""
# A payment or cancellation that arrives first leaves a closed row, so a late "created" cannot open it.
_CLOSE = """
INSERT INTO abandoned_orders (order_id, member_id, title, paid_fen, due_at, state)
VALUES ($1, $2, '', 0, now(), $3)
ON CONFLICT (order_id) DO UPDATE SET state = EXCLUDED.state WHERE abandoned_orders.state = 'waiting'
"""
_CLAIM = """
UPDATE abandoned_orders a SET lease_until = $1::timestamptz + make_interval(secs => $3)
FROM (SELECT order_id FROM abandoned_orders
      WHERE state = 'waiting' AND due_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
      ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) c
WHERE a.order_id = c.order_id
RETURNING a.order_id, a.member_id, a.title, a.paid_fen, a.due_at, a.created_at
"""
_REMIND = """
UPDATE abandoned_orders SET state = 'reminded', coupon = $2, lease_until = NULL
WHERE order_id = $1 AND state = 'waiting' RETURNING true
"""


class AbandonedRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def watch(self, order_id: str, member_id: str, title: str, paid_fen: int, due_at: datetime) -> None:
        await self.conn.execute(_WATCH, order_id, member_id, title, paid_fen, due_at)

    async def close(self, order_id: str, member_id: str, state: str) -> None:
        await self.conn.execute(_CLOSE, order_id, member_id, state)

    async def claim(self, now: datetime, limit: int, lease: float) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(_CLAIM, now, limit, lease)]

    async def remind(self, order_id: str, coupon: dict[str, Any]) -> bool:
        """Mark reminded; False when it was paid or cancelled since it was claimed."""
        return bool(await self.conn.fetchval(_REMIND, order_id, coupon))


# Retention (services/notify/retention.py): a closed row (reminded, paid, cancelled) only stops a
# late or redelivered "created" from opening a reminder; a waiting one is not in the index.
ABANDONED_CLOSED = "state <> 'waiting' AND created_at < $1"


async def prune_abandoned(db: Database, before: datetime) -> int:
    """Closed abandoned-order rows created before ``before`` (walks ix_abandoned_orders_closed)."""
    return await delete_in_batches(db, "abandoned_orders", ABANDONED_CLOSED, before)
