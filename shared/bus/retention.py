"""Keeps the outbox and inbox bounded.

Sent and unroutable outbox rows are kept a week for inspection (unroutable ones are events no
service subscribes to yet, which is most push types: the gateway's inbound log keeps those
pushes anyway); pending and parked rows are never removed. Inbox rows only need to outlive any
redelivery of their event: a month is far beyond the longest retry (10 min delays, a few attempts,
a re-drive by hand). Both deletes walk an index (``ix_outbox_sent_at``, ``ix_inbox_received_at``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.db import Database, delete_in_batches
from shared.periodic import run_every

OUTBOX_SENT_RETENTION = timedelta(days=7)
INBOX_RETENTION = timedelta(days=30)
INTERVAL_SECONDS = 900


# What each delete matches; the outbox predicate repeats ix_outbox_sent_at's partial-index condition
# so the planner can use it.
OUTBOX_EXPIRED = "status IN ('sent', 'unroutable') AND sent_at < $1"
INBOX_EXPIRED = "received_at < $1"


async def prune_once(db: Database, now: datetime | None = None) -> tuple[int, int]:
    """Delete expired rows in bounded batches (short transactions, no long locks)."""
    now = now or datetime.now(UTC)
    sent = await delete_in_batches(db, "outbox", OUTBOX_EXPIRED, now - OUTBOX_SENT_RETENTION)
    seen = await delete_in_batches(db, "inbox", INBOX_EXPIRED, now - INBOX_RETENTION)
    return sent, seen


async def prune_forever(db: Database) -> None:
    async def once() -> dict[str, int]:
        sent, seen = await prune_once(db)
        return {"outbox_sent": sent, "inbox": seen}

    await run_every(INTERVAL_SECONDS, once, "bus.pruned")
