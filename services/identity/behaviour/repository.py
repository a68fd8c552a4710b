"""SQL for behaviour events and the profile counters rule tags read (one statement per method)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

# A retried batch is recognised row by row (origin member, type, object, time): only new rows count.
_ADD_EVENTS = """
INSERT INTO behaviour_events (member_id, origin_member_id, type, object_id, occurred_at, appid, props)
SELECT $1, $2, t, o, at, a, p FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::jsonb[])
    AS x (t, o, at, a, p)
ON CONFLICT DO NOTHING
RETURNING type
"""

# Counters move by deltas; last_active_at never moves back (a late event is not "now").
_ADD_ACTIVITY = """
UPDATE profiles SET
    product_views = product_views + $2, add_to_carts = add_to_carts + $3, shares = shares + $4,
    article_reads = article_reads + $5, last_active_at = greatest(last_active_at, $6), updated_at = now()
WHERE member_id = $1
"""

_TOUCH_ACTIVITY = """
UPDATE profiles SET last_active_at = greatest(last_active_at, $2), updated_at = now() WHERE member_id = $1
"""

_ADD_ORDER = """
UPDATE profiles SET orders = orders + 1, spent_fen = spent_fen + $2, last_order_at = greatest(last_order_at, $3),
    updated_at = now()
WHERE member_id = $1
"""

_ADD_GIFT = """
UPDATE profiles SET gifts_sent = gifts_sent + $2, gifts_received = gifts_received + $3, updated_at = now()
WHERE member_id = $1
"""


class BehaviourRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add_events(
        self, member_id: uuid.UUID, origin_member_id: uuid.UUID, events: Sequence[dict[str, Any]]
    ) -> list[str]:
        """Insert the events a retry has not inserted before; the types of the new ones."""
        rows = await self.conn.fetch(
            _ADD_EVENTS,
            member_id,
            origin_member_id,
            [e["type"] for e in events],
            [e["object_id"] for e in events],
            [e["occurred_at"] for e in events],
            [e["appid"] for e in events],
            [e["props"] for e in events],
        )
        return [r["type"] for r in rows]


class ProfileRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add_activity(self, member_id: uuid.UUID, counts: dict[str, int], last_active_at: datetime) -> None:
        await self.conn.execute(
            _ADD_ACTIVITY,
            member_id,
            counts.get("product_views", 0),
            counts.get("add_to_carts", 0),
            counts.get("shares", 0),
            counts.get("article_reads", 0),
            last_active_at,
        )

    async def touch_activity(self, member_id: uuid.UUID, at: datetime) -> None:
        await self.conn.execute(_TOUCH_ACTIVITY, member_id, at)

    async def add_order(self, member_id: uuid.UUID, amount_fen: int, at: datetime) -> None:
        await self.conn.execute(_ADD_ORDER, member_id, amount_fen, at)

    async def add_gift(self, member_id: uuid.UUID, *, sent: int, received: int) -> None:
        await self.conn.execute(_ADD_GIFT, member_id, sent, received)
