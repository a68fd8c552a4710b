"""The outbox and inbox stay bounded: old sent, unroutable and inbox rows go; pending rows and recent
ones stay; the deletes walk indexes the migrations create, so pruning never reads the whole table."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared.bus.relay import _COUNTS
from shared.bus.retention import (
    INBOX_EXPIRED,
    INBOX_RETENTION,
    OUTBOX_EXPIRED,
    OUTBOX_SENT_RETENTION,
    prune_once,
)
from shared.db import Database, batch_delete_sql
from tests.conftest import SERVICES, db_url
from tests.plans import plan_scans

pytestmark = pytest.mark.integration


@pytest.fixture
async def notify_db(clean_databases: dict[str, str]) -> AsyncIterator[Database]:
    db = await Database(db_url("notify"), producer="notify").open()
    yield db
    await db.close()


async def test_prune_keeps_what_an_operator_or_a_redelivery_still_needs(notify_db: Database) -> None:
    old, recent = datetime.now(UTC) - timedelta(days=40), datetime.now(UTC) - timedelta(hours=1)
    async with notify_db.connection() as conn:
        for status, sent_at in [
            ("sent", old),
            ("sent", recent),
            ("pending", None),
            ("parked", None),
            ("unroutable", old),
            ("unroutable", recent),
        ]:
            await conn.execute(
                "INSERT INTO outbox (event_id, type, body, status, sent_at, created_at) VALUES ($1, 't.x.y', '{}', $2, $3, $4)",
                uuid.uuid4(),
                status,
                sent_at,
                old,
            )
        for received_at in (old, recent):
            await conn.execute(
                "INSERT INTO inbox (consumer, event_id, event_type, received_at) VALUES ('notify', $1, 't.x.y', $2)",
                uuid.uuid4(),
                received_at,
            )
    assert await prune_once(notify_db) == (2, 1)
    assert await prune_once(notify_db) == (0, 0)
    async with notify_db.connection() as conn:
        left = await conn.fetch("SELECT status FROM outbox ORDER BY status")
        # The recent ones, and what is not finished (pending, parked), however old.
        assert [r["status"] for r in left] == ["parked", "pending", "sent", "unroutable"]
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1


async def test_prune_deletes_in_batches_until_nothing_is_left(notify_db: Database) -> None:
    async with notify_db.connection() as conn:
        await conn.execute(
            "INSERT INTO inbox (consumer, event_id, event_type, received_at) "
            "SELECT 'notify', gen_random_uuid(), 't.x.y', now() - interval '40 days' FROM generate_series(1, 12001)"
        )
    assert await prune_once(notify_db) == (0, 12001)  # three batches of 5 000


# ---------------------------------------------------------------------------------------------
# the deletes use the indexes


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_retention_deletes_and_the_relay_counts_walk_indexes(notify_db: Database, plan_cache_mode: str) -> None:
    """A table the size of a busy week: the deletes find their few expired rows through an index,
    for the first executions (custom plans) and once PostgreSQL switches to a generic plan."""
    async with notify_db.connection() as conn:
        for age, n in ((timedelta(hours=1), 40_000), (OUTBOX_SENT_RETENTION + timedelta(days=1), 500)):
            await conn.execute(
                "INSERT INTO outbox (event_id, type, body, status, sent_at) "
                "SELECT gen_random_uuid(), 't.x.y', '\\x00', 'sent', now() - $1::interval + g * interval '1 ms' "
                "FROM generate_series(1, $2) AS g",
                age,
                n,
            )
        for age, n in ((timedelta(hours=1), 40_000), (INBOX_RETENTION + timedelta(days=1), 500)):
            await conn.execute(
                "INSERT INTO inbox (consumer, event_id, event_type, received_at) "
                "SELECT 'notify', gen_random_uuid(), 't.x.y', now() - $1::interval + g * interval '1 ms' "
                "FROM generate_series(1, $2) AS g",
                age,
                n,
            )
        await conn.execute("ANALYZE outbox, inbox")
        await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        now = datetime.now(UTC)
        outbox = await plan_scans(conn, batch_delete_sql("outbox", OUTBOX_EXPIRED), now - OUTBOX_SENT_RETENTION)
        inbox = await plan_scans(conn, batch_delete_sql("inbox", INBOX_EXPIRED), now - INBOX_RETENTION)
        counts = await plan_scans(conn, _COUNTS)
        await conn.execute("RESET plan_cache_mode")
    # The outer DELETE finds its batch by ctid; the batch itself comes from the index.
    assert outbox == [("Index Scan", "outbox", "ix_outbox_sent_at"), ("Tid Scan", "outbox", None)], outbox
    assert inbox == [("Index Scan", "inbox", "ix_inbox_received_at"), ("Tid Scan", "inbox", None)], inbox
    assert {index for _, _, index in counts} == {"ix_outbox_pending", "ix_outbox_parked"}, counts
    assert not any(node == "Seq Scan" for node, _, _ in counts)


async def test_every_service_migration_creates_the_bus_indexes(databases: dict[str, str]) -> None:
    for service in SERVICES:
        conn = await asyncpg.connect(db_url(service))
        try:
            rows = await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('outbox', 'inbox') "
                "AND indexname IN ('ix_outbox_pending', 'ix_outbox_sent_at', 'ix_outbox_parked', 'ix_inbox_received_at')"
            )
        finally:
            await conn.close()
        defs = {r["indexname"]: r["indexdef"] for r in rows}
        assert set(defs) == {"ix_outbox_pending", "ix_outbox_sent_at", "ix_outbox_parked", "ix_inbox_received_at"}, (
            service,
            defs,
        )
        assert "(sent_at) WHERE" in defs["ix_outbox_sent_at"] and "'unroutable'" in defs["ix_outbox_sent_at"]
        assert "(id) WHERE" in defs["ix_outbox_parked"] and "'parked'" in defs["ix_outbox_parked"]
        assert defs["ix_inbox_received_at"].endswith("(received_at)")
