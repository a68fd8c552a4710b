"""The gateway's tables stay bounded: each janitor deletes past its horizon, by an index."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.gateway.idempotency.service import prune_idempotency_keys
from services.gateway.pushes.service import prune_push_log
from services.gateway.ratelimit.service import prune_rate_limits
from services.gateway.settings import GatewaySettings
from shared.db import Database
from shared.settings import load_settings
from tests.conftest import db_url

pytestmark = pytest.mark.integration

# Each prune's predicate and the index it must be able to walk.
PRUNES = {
    "push_nonces": ("seen_at < now()", "ix_push_nonces_seen_at"),
    "inbound_pushes": ("received_at < now()", "ix_inbound_pushes_received_at"),
    "idempotency_keys": ("expires_at < now()", "ix_idempotency_keys_expires_at"),
    "rate_limits": ("sweep_at < now()", "ix_rate_limits_sweep_at"),
}


async def test_every_prune_keeps_what_is_inside_its_horizon(clean_databases: dict[str, str]) -> None:
    settings = load_settings(GatewaySettings)
    week_ago, now = datetime.now(UTC) - timedelta(days=7), datetime.now(UTC)
    conn = await asyncpg.connect(db_url("gateway"))
    db = await Database(db_url("gateway"), producer="gateway").open()
    try:
        for name, at in (("old", week_ago), ("new", now)):
            await conn.execute(
                "INSERT INTO push_nonces (appid, nonce, timestamp, body_sha256, seen_at) VALUES ('wx1', $1, '1', 'h', $2)",
                name,
                at,
            )
            await conn.execute(
                "INSERT INTO inbound_pushes (appid, dedup_key, event_type, payload, received_at) "
                "VALUES ('wx1', $1, 'wechat.oa.x', '{}', $2)",
                name,
                at,
            )
            await conn.execute(
                "INSERT INTO idempotency_keys (scope, key, request_hash, status, owner, locked_until, expires_at) "
                "VALUES ('ip:1', $1, 'h', 'done', gen_random_uuid(), $2, $2::timestamptz + interval '1 day')",
                name,
                at,
            )
            await conn.execute(
                "INSERT INTO rate_limits (key, tat, sweep_at) VALUES ($1, $2, $2::timestamptz + interval '1 hour')",
                name,
                at,
            )
        assert await prune_push_log(db, settings) == {"nonces": 1, "pushes": 1}
        assert await prune_idempotency_keys(db) == 1
        assert await prune_rate_limits(db) == 1
        assert await prune_push_log(db, settings) == {"nonces": 0, "pushes": 0}
        for table, column in (
            ("push_nonces", "nonce"),
            ("inbound_pushes", "dedup_key"),
            ("idempotency_keys", "key"),
            ("rate_limits", "key"),
        ):
            assert [r[column] for r in await conn.fetch(f"SELECT {column} FROM {table}")] == ["new"], table
    finally:
        await db.close()
        await conn.close()


@pytest.mark.parametrize("table", sorted(PRUNES))
async def test_each_prune_walks_an_index(clean_databases: dict[str, str], table: str) -> None:
    predicate, index = PRUNES[table]
    conn = await asyncpg.connect(db_url("gateway"))
    try:
        # Tiny test tables are cheapest to scan whole; forbid that to see the plan a large table gets.
        await conn.execute("SET enable_seqscan = off")
        plan = json.loads(
            await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT ctid FROM {table} WHERE {predicate} LIMIT 5000")
        )
    finally:
        await conn.close()
    assert index in json.dumps(plan), plan
