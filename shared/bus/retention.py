"""Keeps the outbox and inbox bounded.

Sent and unroutable outbox rows are kept a week for inspection (unroutable ones are events no
service subscribes to yet, which is most push types: the gateway's inbound log keeps those
pushes anyway); pending rows are never removed. Inbox rows only need to outlive any redelivery of their event: a
month is far beyond the longest retry (10 min delays, a handful of attempts, a re-drive by hand).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.observability import get_logger

log = get_logger(__name__)

OUTBOX_SENT_RETENTION = timedelta(days=7)
INBOX_RETENTION = timedelta(days=30)
BATCH = 5000
INTERVAL_SECONDS = 900


async def _delete_batches(
    sessions: async_sessionmaker[AsyncSession], table: Table, where: str, cutoff: datetime
) -> int:
    # ctid batches keep each transaction short; `where` is one of the constants below, never input.
    sql = text(f"DELETE FROM {table.name} WHERE ctid IN (SELECT ctid FROM {table.name} WHERE {where} LIMIT {BATCH})")
    total = 0
    while True:
        async with sessions() as session, session.begin():
            result = await session.execute(sql, {"cutoff": cutoff})
        deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        if deleted < BATCH:
            return total


async def prune_once(
    sessions: async_sessionmaker[AsyncSession], outbox: Table, inbox: Table, now: datetime | None = None
) -> tuple[int, int]:
    """Delete expired rows in bounded batches (short transactions, no long locks)."""
    now = now or datetime.now(UTC)
    sent = await _delete_batches(
        sessions, outbox, "status IN ('sent', 'unroutable') AND sent_at < :cutoff", now - OUTBOX_SENT_RETENTION
    )
    seen = await _delete_batches(sessions, inbox, "received_at < :cutoff", now - INBOX_RETENTION)
    return sent, seen


async def prune_forever(sessions: async_sessionmaker[AsyncSession], outbox: Table, inbox: Table) -> None:
    while True:
        try:
            sent, seen = await prune_once(sessions, outbox, inbox)
            if sent or seen:
                log.info("bus.pruned", outbox_sent=sent, inbox=seen)
        except Exception as exc:
            log.warning("bus.prune_failed", error=repr(exc))
        await asyncio.sleep(INTERVAL_SECONDS)
