"""SQL for follow state and the follow log (one statement per method)."""

from __future__ import annotations

import uuid
from dataclasses import astuple
from datetime import datetime

import asyncpg

from services.identity.follows.schemas import FollowState, LoggedChange

# The same change at the same WeChat time is one row: a redelivery under a new event id is a no-op.
_RECORD = """
INSERT INTO follow_events (member_id, appid, openid, change, scene, ticket, occurred_at, source_event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
RETURNING true
"""

_STATE_COLUMNS = (
    "subscribed, subscribed_at, unsubscribed_at, first_subscribed_at, subscribe_count, first_scene, first_ticket, "
    "first_scene_at, last_scene, last_ticket, last_scene_at, state_at"
)
_FOLLOW = f"SELECT {_STATE_COLUMNS} FROM follows WHERE appid = $1 AND openid = $2"

_LOGGED = """
SELECT change, scene, ticket, occurred_at FROM follow_events WHERE appid = $1 AND openid = $2
"""

_ATTACH_ORPHANS = "UPDATE follow_events SET member_id = $3 WHERE appid = $1 AND openid = $2 AND member_id IS NULL"

_UPSERT = f"""
INSERT INTO follows (member_id, appid, openid, {_STATE_COLUMNS}, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now())
ON CONFLICT (appid, openid) DO UPDATE SET
    member_id = EXCLUDED.member_id, subscribed = EXCLUDED.subscribed, subscribed_at = EXCLUDED.subscribed_at,
    unsubscribed_at = EXCLUDED.unsubscribed_at, first_subscribed_at = EXCLUDED.first_subscribed_at,
    subscribe_count = EXCLUDED.subscribe_count, first_scene = EXCLUDED.first_scene,
    first_ticket = EXCLUDED.first_ticket, first_scene_at = EXCLUDED.first_scene_at,
    last_scene = EXCLUDED.last_scene, last_ticket = EXCLUDED.last_ticket, last_scene_at = EXCLUDED.last_scene_at,
    state_at = EXCLUDED.state_at, updated_at = now()
"""


class FollowRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def record(
        self,
        member_id: uuid.UUID | None,
        *,
        appid: str,
        openid: str,
        change: str,
        scene: str | None,
        ticket: str | None,
        at: datetime,
        source_event_id: uuid.UUID | None,
    ) -> bool:
        """Append to the follow log; False when this exact change was logged before."""
        fresh = await self.conn.fetchval(_RECORD, member_id, appid, openid, change, scene, ticket, at, source_event_id)
        return fresh is not None

    async def state(self, appid: str, openid: str) -> FollowState | None:
        row = await self.conn.fetchrow(_FOLLOW, appid, openid)
        return None if row is None else FollowState(*row.values())

    async def logged(self, appid: str, openid: str) -> list[LoggedChange]:
        return [LoggedChange(*r.values()) for r in await self.conn.fetch(_LOGGED, appid, openid)]

    async def attach_orphans(self, appid: str, openid: str, member_id: uuid.UUID) -> None:
        await self.conn.execute(_ATTACH_ORPHANS, appid, openid, member_id)

    async def save(self, member_id: uuid.UUID, appid: str, openid: str, state: FollowState) -> None:
        await self.conn.execute(_UPSERT, member_id, appid, openid, *astuple(state))
