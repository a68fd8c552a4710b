"""Retention of identity's raw logs: follow events and behaviour events older than their horizon are
deleted (through an index), the aggregates they fed stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.identity import schedule
from tests.integration.identity_fixtures import MP, OA, Identity, identity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

__all__ = ["identity"]


async def test_old_follow_and_behaviour_events_are_pruned_and_the_profile_stays(identity: Identity) -> None:
    user = await identity.sandbox.user()
    await identity.deliver(await identity.sandbox.follow(user, scene="store_1"))
    member = (await identity.login(user))["member_id"]
    now = datetime.now(UTC)
    r = await identity.api.post(
        f"/internal/members/{member}/events",
        json={"events": [{"type": "product_view", "object_id": "sku_1", "occurred_at": now.isoformat(), "appid": MP}]},
    )
    assert r.status_code == 202
    settings = identity.deps.settings
    old_follow = now - timedelta(days=settings.follow_events_retention_days + 1)
    old_behaviour = now - timedelta(days=settings.behaviour_events_retention_days + 1)
    # Rows from long ago, as if written then.
    await identity.sql(
        "INSERT INTO follow_events (member_id, appid, openid, change, occurred_at) VALUES ($1::uuid, $2, $3, 'scan', $4)",
        member,
        OA,
        user["openids"][OA],
        old_follow,
    )
    await identity.sql(
        "INSERT INTO behaviour_events (member_id, origin_member_id, type, object_id, occurred_at) "
        "VALUES ($1::uuid, $1::uuid, 'share', 'sku_9', $2)",
        member,
        old_behaviour,
    )
    before = (await identity.member(member))["profile"]

    assert await schedule.prune(identity.deps) == {"follow_events": 1, "behaviour_events": 1, "sync_attempts": 0}

    assert [r["change"] for r in await identity.sql("SELECT change FROM follow_events")] == ["subscribe"]
    assert [r["object_id"] for r in await identity.sql("SELECT object_id FROM behaviour_events")] == ["sku_1"]
    after = await identity.member(member)
    assert after["profile"] == before and after["follows"][0]["first_scene"] == "store_1"
    assert await schedule.prune(identity.deps) == {"follow_events": 0, "behaviour_events": 0, "sync_attempts": 0}


@pytest.mark.parametrize(
    ("table", "predicate", "index"),
    [
        ("follow_events", schedule.FOLLOW_EVENTS_OLDER_THAN, "ix_follow_events_occurred_at"),
        ("behaviour_events", schedule.BEHAVIOUR_EVENTS_OLDER_THAN, "ix_behaviour_events_occurred_at"),
    ],
)
async def test_retention_deletes_go_through_an_index(
    identity: Identity, table: str, predicate: str, index: str
) -> None:
    async with identity.db.unit_of_work() as uow:
        # With sequential scans priced out, the planner shows an index that serves the predicate.
        await uow.conn.execute("SET LOCAL enable_seqscan = off")
        plan = await uow.conn.fetch(f"EXPLAIN SELECT ctid FROM {table} WHERE {predicate} LIMIT 5000", 400)
    assert index in "\n".join(r[0] for r in plan)
