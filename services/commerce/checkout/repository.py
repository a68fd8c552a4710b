"""SQL for the checkout callbacks: the VIP-discount reservations (one statement per method)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Database, delete_in_batches

# Reserve once per unique_id and answer the reservation's status in the same statement: a fresh
# insert returns 'reserved', a retry returns whatever the first call (or a release) left.
_RESERVE = """
WITH fresh AS (
    INSERT INTO vip_discount_reservations (unique_id, order_session_id, shop_appid, openid, status, price_info)
    VALUES ($1, $2, $3, $4, 'reserved', $5)
    ON CONFLICT (unique_id) DO NOTHING
    RETURNING status
)
SELECT status FROM fresh
UNION ALL
SELECT status FROM vip_discount_reservations WHERE unique_id = $1 AND NOT EXISTS (SELECT 1 FROM fresh)
"""

_RELEASE = """
UPDATE vip_discount_reservations SET status = 'released', released_at = now()
WHERE unique_id = $1 AND status = 'reserved'
"""


class VipDiscountRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def reserve(
        self, unique_id: str, *, order_session_id: str | None, shop_appid: str | None, openid: str, price_info: Any
    ) -> str:
        """Reserve once per ``unique_id``; the reservation's status after this call."""
        status = await self.conn.fetchval(_RESERVE, unique_id, order_session_id, shop_appid, openid, price_info)
        return str(status)

    async def release(self, unique_id: str) -> bool:
        """Release a reservation; False when there was none, or it was released already."""
        return str(await self.conn.execute(_RELEASE, unique_id)) == "UPDATE 1"


# Retention (services/commerce/retention.py): a reservation is read only by WeChat's retries of
# use / unuse (hours) and matters until its order settles after the after-sale window (weeks); the
# horizon (COMMERCE_VIP_RESERVATION_RETENTION_DAYS) is months past both, whatever its status.
RESERVATIONS_EXPIRED = "created_at < $1"


async def prune_reservations(db: Database, before: datetime) -> int:
    """Reservations made before ``before`` (walks ix_vip_discount_reservations_created_at)."""
    return await delete_in_batches(db, "vip_discount_reservations", RESERVATIONS_EXPIRED, before)
