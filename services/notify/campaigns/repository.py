"""Campaigns: what to send to whom, and how far the fan-out has come (so a crash resumes, not restarts)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

_INSERT = """
INSERT INTO campaigns (id, name, audience, message, kind, state) VALUES ($1, $2, $3, $4, $5, 'draft')
"""
_GET = "SELECT id, name, audience, message, kind, state, cursor, fanout_done, recap FROM campaigns WHERE id = $1"
_START = """
UPDATE campaigns SET state = 'running', started_at = COALESCE(started_at, now())
WHERE id = $1 AND state IN ('draft', 'running') RETURNING state
"""
_CANCEL = """
UPDATE campaigns SET state = 'cancelled', finished_at = COALESCE(finished_at, now())
WHERE id = $1 AND state IN ('draft', 'running', 'cancelled') RETURNING state
"""
# One replica fans a campaign out at a time; a lease (not a lock) survives nobody's crash.
_CLAIM_FANOUT = """
UPDATE campaigns SET fanout_lease = $1::timestamptz + make_interval(secs => $2)
WHERE id = (SELECT id FROM campaigns
            WHERE state = 'running' AND NOT fanout_done AND (fanout_lease IS NULL OR fanout_lease < $1)
            ORDER BY started_at LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, name, audience, message, kind, state, cursor, fanout_done
"""
_ADVANCE = """
UPDATE campaigns SET cursor = $2, fanout_done = $3, fanout_lease = NULL
WHERE id = $1 AND state = 'running' RETURNING true
"""
_COMPLETE = """
UPDATE campaigns c SET state = 'completed', finished_at = now()
WHERE c.state = 'running' AND c.fanout_done
  AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.campaign_id = c.id AND s.status IN ('pending', 'deferred'))
RETURNING id
"""
# Finished campaigns whose first sends may have reached the retention horizon (none is older than
# the start) and whose recap is not stored yet; none of their sends is still waiting.
_UNFROZEN = """
SELECT c.id FROM campaigns c
WHERE c.recap IS NULL AND c.state IN ('completed', 'cancelled') AND c.started_at < $1
  AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.campaign_id = c.id AND s.status IN ('pending', 'deferred'))
ORDER BY c.started_at LIMIT $2
"""
_FREEZE = "UPDATE campaigns SET recap = $2 WHERE id = $1 AND recap IS NULL RETURNING true"


class CampaignRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(
        self, campaign_id: uuid.UUID, name: str, audience: dict[str, Any], message: dict[str, Any], kind: str
    ) -> None:
        await self.conn.execute(_INSERT, campaign_id, name, audience, message, kind)

    async def get(self, campaign_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.conn.fetchrow(_GET, campaign_id)
        return dict(row) if row else None

    async def start(self, campaign_id: uuid.UUID) -> bool:
        return await self.conn.fetchval(_START, campaign_id) is not None

    async def cancel(self, campaign_id: uuid.UUID) -> bool:
        return await self.conn.fetchval(_CANCEL, campaign_id) is not None

    async def claim_fanout(self, now: datetime, lease: float) -> dict[str, Any] | None:
        row = await self.conn.fetchrow(_CLAIM_FANOUT, now, lease)
        return dict(row) if row else None

    async def advance(self, campaign_id: uuid.UUID, cursor: str | None, done: bool) -> bool:
        return bool(await self.conn.fetchval(_ADVANCE, campaign_id, cursor, done))

    async def complete_finished(self) -> int:
        return len(await self.conn.fetch(_COMPLETE))

    async def unfrozen(self, before: datetime, limit: int) -> list[uuid.UUID]:
        """Finished campaigns started before ``before`` whose recap is not stored yet."""
        return [r["id"] for r in await self.conn.fetch(_UNFROZEN, before, limit)]

    async def freeze(self, campaign_id: uuid.UUID, recap: dict[str, Any]) -> bool:
        """Store the campaign's recap; False when it was stored already."""
        return bool(await self.conn.fetchval(_FREEZE, campaign_id, recap))
