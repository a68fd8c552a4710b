"""Keeps the outbox and inbox bounded.

Sent and unroutable outbox rows are kept a week for inspection (unroutable ones are events no
service subscribes to yet, which is most push types: the gateway's inbound log keeps those
pushes anyway); pending rows are never removed. Inbox rows only need to outlive any redelivery
of their event: a month is far beyond the longest retry (10 min delays, a few attempts, a
re-drive by hand).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import delete_in_batches
from shared.periodic import run_every

OUTBOX_SENT_RETENTION = timedelta(days=7)
INBOX_RETENTION = timedelta(days=30)
INTERVAL_SECONDS = 900


async def prune_once(
    sessions: async_sessionmaker[AsyncSession], outbox: Table, inbox: Table, now: datetime | None = None
) -> tuple[int, int]:
    """Delete expired rows in bounded batches (short transactions, no long locks)."""
    now = now or datetime.now(UTC)
    sent = await delete_in_batches(
        sessions,
        outbox.name,
        "status IN ('sent', 'unroutable') AND sent_at < :cutoff",
        {"cutoff": now - OUTBOX_SENT_RETENTION},
    )
    seen = await delete_in_batches(sessions, inbox.name, "received_at < :cutoff", {"cutoff": now - INBOX_RETENTION})
    return sent, seen


async def prune_forever(sessions: async_sessionmaker[AsyncSession], outbox: Table, inbox: Table) -> None:
    async def once() -> dict[str, int]:
        sent, seen = await prune_once(sessions, outbox, inbox)
        return {"outbox_sent": sent, "inbox": seen}

    await run_every(INTERVAL_SECONDS, once, "bus.pruned")
