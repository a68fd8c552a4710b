"""SQL of the deliveries: record a decision, claim it for sending, record the result, sweep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Database, delete_in_batches

# Woken at the commit of the transaction that recorded a delivery (NOTIFY is transactional).
WAKE_CHANNEL = "siyu_notify_deliveries"

_RECORD = f"""
WITH recorded AS (
    INSERT INTO deliveries (channel, appid, openid, source_event_id, body, status)
    VALUES ($1, $2, $3, $4, $5, 'pending')
    ON CONFLICT (source_event_id) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify('{WAKE_CHANNEL}', '') FROM recorded
"""

# The claim is the guard against sending twice: only the sender that moved a row to 'sending'
# calls WeChat for it, and it does so after this statement committed.
_CLAIM = """
UPDATE deliveries d SET status = 'sending', claimed_at = now(), attempts = d.attempts + 1
FROM (
    SELECT id FROM deliveries WHERE status = 'pending' AND available_at <= now()
    ORDER BY available_at LIMIT $1 FOR UPDATE SKIP LOCKED
) due
WHERE d.id = due.id
RETURNING d.id, d.channel, d.appid, d.openid, d.body, d.attempts
"""

_FINISH = """
UPDATE deliveries SET status = $2, errcode = $3, errmsg = $4, finished_at = now()
WHERE id = $1 AND status = 'sending'
"""

_RETRY_LATER = """
UPDATE deliveries SET status = 'pending', available_at = now() + make_interval(secs => $2), errcode = $3, errmsg = $4
WHERE id = $1 AND status = 'sending'
"""

_SWEEP_STUCK = """
UPDATE deliveries SET status = 'unknown', finished_at = now(),
    errmsg = 'the send never reported back (its process stopped mid-call); not sent again'
WHERE status = 'sending' AND claimed_at < now() - make_interval(secs => $1)
"""


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    channel: str
    appid: str
    openid: str
    body: dict[str, Any]
    attempts: int


class DeliveryRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def record(self, channel: str, appid: str, openid: str, source_event_id: str, body: dict[str, Any]) -> bool:
        """A pending delivery, once per source event; False when that event already has one."""
        return await self.conn.fetchrow(_RECORD, channel, appid, openid, source_event_id, body) is not None

    async def claim(self, limit: int) -> list[ClaimedDelivery]:
        rows = await self.conn.fetch(_CLAIM, limit)
        return [ClaimedDelivery(**dict(row)) for row in rows]

    async def finish(self, delivery_id: int, status: str, errcode: int | None, errmsg: str | None) -> None:
        await self.conn.execute(_FINISH, delivery_id, status, errcode, errmsg)

    async def retry_later(self, delivery_id: int, delay: float, errcode: int | None, errmsg: str | None) -> None:
        await self.conn.execute(_RETRY_LATER, delivery_id, delay, errcode, errmsg)


async def sweep_stuck(db: Database, older_than_seconds: float) -> int:
    """Deliveries claimed longer ago than any send can take: their sender died (walks ix_deliveries_sending)."""
    async with db.connection() as conn:
        status = await conn.execute(_SWEEP_STUCK, older_than_seconds)
    return int(status.rsplit(" ", 1)[-1])


# Retention (services/notify/retention.py): a finished courtesy reply older than the horizon; one
# still pending or sending is not in the index.
DELIVERIES_EXPIRED = "status IN ('sent', 'rejected', 'failed', 'unknown') AND created_at < $1"


async def prune_deliveries(db: Database, before: datetime) -> int:
    """Finished deliveries recorded before ``before`` (walks ix_deliveries_done_created_at)."""
    return await delete_in_batches(db, "deliveries", DELIVERIES_EXPIRED, before)
