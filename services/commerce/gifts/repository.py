"""SQL of gifts (one statement per method). Each transition is a conditional UPDATE on the state it
leaves, so a transition happens (and is announced) once, whichever event or reconcile gets there."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_OPEN = """
INSERT INTO gifts AS g (present_order_id, order_id, shop_appid, giver_member_id, giver_openid, state, title, paid_fen,
                        original_sku_id)
VALUES ($1, $2, $3, $4, $5, 'awaiting_payment', $6, $7, $8)
ON CONFLICT (present_order_id) DO UPDATE SET
    giver_member_id = coalesce(g.giver_member_id, EXCLUDED.giver_member_id),
    giver_openid = coalesce(g.giver_openid, EXCLUDED.giver_openid)
RETURNING state
"""

_PAID = """
UPDATE gifts SET state = 'waiting', paid_at = $2, expires_at = $3, updated_at = now()
WHERE present_order_id = $1 AND state = 'awaiting_payment'
RETURNING true
"""

_ACCEPTED = """
UPDATE gifts SET state = 'accepted', recipient_member_id = $2, recipient_openid = $3, original_sku_id = $4,
                 accepted_sku_id = $5, swapped = $6, accepted_at = $7, updated_at = now()
WHERE present_order_id = $1 AND state IN ('awaiting_payment', 'waiting')
RETURNING true
"""

_MOVE_STATE = """
UPDATE gifts SET state = $3::text, updated_at = now(),
                 closed_at = CASE WHEN $3::text IN ('expired', 'refunded', 'cancelled') THEN $4 ELSE closed_at END
WHERE present_order_id = $1 AND state = ANY($2::text[])
RETURNING true
"""

_GIFT = "SELECT * FROM gifts WHERE present_order_id = $1"

# Overdue: still waiting well after its 24 h (the shop's cancel push may have been lost).
_OVERDUE = """
SELECT present_order_id, order_id, shop_appid FROM gifts
WHERE state = 'waiting' AND expires_at <= $1
ORDER BY expires_at LIMIT $2
"""

_OF_MEMBER = """
SELECT g.order_id, g.present_order_id, g.state, g.accepted_at,
       CASE WHEN g.giver_member_id = $1 THEN 'giver' ELSE 'recipient' END AS role,
       CASE WHEN g.giver_member_id = $1 THEN coalesce(o.points, 0) ELSE 0 END AS points
FROM gifts g LEFT JOIN orders o ON o.order_id = g.order_id
WHERE g.giver_member_id = $1 OR g.recipient_member_id = $1
ORDER BY g.created_at DESC, g.present_order_id
LIMIT $2
"""

_MOVE_GIVER = "UPDATE gifts SET giver_member_id = $2 WHERE giver_member_id = $1"
_MOVE_RECIPIENT = "UPDATE gifts SET recipient_member_id = $2 WHERE recipient_member_id = $1"


class GiftRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def open(
        self,
        present_order_id: str,
        order_id: str,
        shop_appid: str,
        giver_member_id: str | None,
        giver_openid: str | None,
        title: str,
        paid_fen: int,
        sku_id: str | None,
    ) -> str:
        return str(
            await self.conn.fetchval(
                _OPEN, present_order_id, order_id, shop_appid, giver_member_id, giver_openid, title, paid_fen, sku_id
            )
        )

    async def paid(self, present_order_id: str, paid_at: datetime, expires_at: datetime) -> bool:
        return await self.conn.fetchval(_PAID, present_order_id, paid_at, expires_at) is not None

    async def accepted(
        self,
        present_order_id: str,
        *,
        recipient_member_id: str | None,
        recipient_openid: str,
        original_sku_id: str | None,
        accepted_sku_id: str | None,
        swapped: bool,
        at: datetime,
    ) -> bool:
        value = await self.conn.fetchval(
            _ACCEPTED,
            present_order_id,
            recipient_member_id,
            recipient_openid,
            original_sku_id,
            accepted_sku_id,
            swapped,
            at,
        )
        return value is not None

    async def move_state(self, present_order_id: str, from_states: list[str], to_state: str, at: datetime) -> bool:
        return await self.conn.fetchval(_MOVE_STATE, present_order_id, from_states, to_state, at) is not None

    async def gift(self, present_order_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(_GIFT, present_order_id)
        return row

    async def overdue(self, before: datetime, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_OVERDUE, before, limit))

    async def of_member(self, member_id: str, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_OF_MEMBER, member_id, limit))

    async def move_giver(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE_GIVER, from_member, to_member)

    async def move_recipient(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE_RECIPIENT, from_member, to_member)
