"""The outbox and inbox stay bounded: old sent, unroutable and inbox rows go; pending rows and recent ones stay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.notify.models import BUS
from shared.bus.retention import prune_once
from shared.db import create_engine, create_sessionmaker
from tests.conftest import db_url

pytestmark = pytest.mark.integration


async def test_prune_keeps_what_an_operator_or_a_redelivery_still_needs(clean_databases: dict[str, str]) -> None:
    old, recent = datetime.now(UTC) - timedelta(days=40), datetime.now(UTC) - timedelta(hours=1)
    conn = await asyncpg.connect(db_url("notify"))
    try:
        for status, sent_at in [
            ("sent", old),
            ("sent", recent),
            ("pending", None),
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
        engine = create_engine(db_url("notify").replace("postgresql://", "postgresql+asyncpg://"))
        try:
            assert await prune_once(create_sessionmaker(engine), BUS.outbox, BUS.inbox) == (2, 1)
            assert await prune_once(create_sessionmaker(engine), BUS.outbox, BUS.inbox) == (0, 0)
        finally:
            await engine.dispose()
        left = await conn.fetch("SELECT status FROM outbox ORDER BY status")
        assert [r["status"] for r in left] == ["pending", "sent", "unroutable"]  # the recent ones and pending
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1
    finally:
        await conn.close()


async def test_gateway_janitor_keeps_the_replay_store_and_inbound_log_bounded(clean_databases: dict[str, str]) -> None:
    from types import SimpleNamespace

    from services.gateway.callbacks.janitor import prune_once as prune_gateway
    from services.gateway.settings import GatewaySettings
    from shared.settings import load_settings

    settings = load_settings(GatewaySettings)
    week_ago, now = datetime.now(UTC) - timedelta(days=7), datetime.now(UTC)
    conn = await asyncpg.connect(db_url("gateway"))
    try:
        for nonce, seen_at in (("old", week_ago), ("new", now)):
            await conn.execute(
                "INSERT INTO push_nonces (appid, nonce, timestamp, body_sha256, seen_at) VALUES ('wx1', $1, '1', 'h', $2)",
                nonce,
                seen_at,
            )
            await conn.execute(
                "INSERT INTO inbound_pushes (appid, dedup_key, event_type, payload, received_at) "
                "VALUES ('wx1', $1, 'wechat.oa.x', '{}', $2)",
                nonce,
                seen_at,
            )
        engine = create_engine(settings.sqlalchemy_url)
        try:
            rt = SimpleNamespace(settings=settings, sessions=create_sessionmaker(engine))
            assert await prune_gateway(rt) == {"nonces": 1, "pushes": 1}  # type: ignore[arg-type]
        finally:
            await engine.dispose()
        assert [r["nonce"] for r in await conn.fetch("SELECT nonce FROM push_nonces")] == ["new"]
        assert [r["dedup_key"] for r in await conn.fetch("SELECT dedup_key FROM inbound_pushes")] == ["new"]
    finally:
        await conn.close()
