"""notify's retention: every table that grows with traffic loses what is past its horizon, keeps what a
running flow still needs (a pending send, a campaign in progress, this week's caps, a waiting
reminder), a finished campaign's recap stays the same when its sends go, and every delete walks an
index (services/notify/retention.py, README "Retention")."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from services.notify import retention
from services.notify.abandoned.repository import ABANDONED_CLOSED
from services.notify.authorisations.repository import AUTHORISATIONS_SPENT, GRANTS_EXPIRED
from services.notify.deliveries.repository import DELIVERIES_EXPIRED
from services.notify.deps import NotifyDeps, build_deps
from services.notify.limits.repository import CAPS_PAST
from services.notify.limits.service import beijing_week
from services.notify.members.repository import WINDOWS_EXPIRED
from services.notify.sends import repository as sends_sql
from services.notify.sends.repository import SENDS_EXPIRED
from shared.db import Database, batch_delete_sql
from tests.conftest import db_url
from tests.integration.notify_fixtures import (
    MP,
    OA,
    Notify,
    notify_settings,
    notify_stack,
    open_window,
    query,
)
from tests.plans import plan_scans
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DAY = timedelta(days=1)
MESSAGE = {"title": "会员日双倍积分", "body": "今天下单积分翻倍", "page": "pages/campaign/index"}
NOTHING = dict.fromkeys(
    (
        "recaps_frozen",
        "sends",
        "deliveries",
        "service_windows",
        "authorisation_grants",
        "authorisations",
        "marketing_caps",
        "abandoned_orders",
    ),
    0,
)


@pytest.fixture
async def deps(clean_databases: dict[str, str]) -> AsyncIterator[NotifyDeps]:
    """notify's dependencies on this run's database, without the app (no job runs beside the test)."""
    db = await Database(db_url("notify"), producer="notify").open()
    deps = build_deps(notify_settings(), db, httpx.AsyncClient(), None)
    try:
        yield deps
    finally:
        await deps.aclose()
        await db.close()


@pytest.fixture
async def conn(deps: NotifyDeps) -> AsyncIterator[asyncpg.Connection]:
    async with deps.db.connection() as c:
        yield c


# ---------------------------------------------------------------------------------------------
# a campaign's recap outlives its sends


async def test_a_finished_campaign_answers_the_same_recap_after_its_sends_are_pruned(
    deps: NotifyDeps, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async for notify in notify_stack(amqp):
        reached = []
        for _ in range(2):
            member_id, user = await notify.member(follow=True)
            await open_window(notify, user)
            reached.append(member_id)
        silent, _ = await notify.member(follow=True)  # no window, no authorisation: skipped
        cid = await _run_campaign(notify, [*reached, silent])
        recap = (await notify.api.get(f"/internal/campaigns/{cid}")).json()
        assert (recap["targeted"], recap["sent"], recap["skipped"]) == (3, 2, {"no_service_window": 1})
        assert len((await notify.api.get(f"/internal/members/{silent}/messages")).json()) == 1

        # Within the horizon nothing goes and nothing is frozen.
        assert await retention.prune_once(deps) == NOTHING

        # The campaign ran longer ago than the horizon.
        age = timedelta(days=deps.settings.sends_retention_days + 1)
        await query("UPDATE sends SET created_at = created_at - $1::interval", age)
        await query("UPDATE campaigns SET started_at = started_at - $1::interval", age)

        assert await retention.prune_once(deps) == {**NOTHING, "recaps_frozen": 1, "sends": 3}
        assert await query("SELECT id FROM sends") == []
        assert (await notify.api.get(f"/internal/campaigns/{cid}")).json() == recap
        # The member's history and the funnel hold what is inside the horizon: nothing, here.
        assert (await notify.api.get(f"/internal/members/{silent}/messages")).json() == []
        assert (await notify.api.get("/internal/funnel")).json() == []
        assert await retention.prune_once(deps) == NOTHING


async def _run_campaign(notify: Notify, member_ids: list[str]) -> str:
    r = await notify.api.post(
        "/internal/campaigns",
        json={"name": "spring", "audience": {"member_ids": member_ids}, "message": MESSAGE, "kind": "marketing"},
    )
    assert r.status_code == 201, r.text
    cid = str(r.json()["campaign_id"])
    assert (await notify.api.post(f"/internal/campaigns/{cid}/start")).status_code == 202

    async def completed() -> bool:
        rows = await query("SELECT state FROM campaigns WHERE id = $1::uuid", cid)
        return bool(rows[0]["state"] == "completed")

    await eventually(completed, what="the campaign completed")
    return cid


# ---------------------------------------------------------------------------------------------
# old rows go, rows still needed stay


async def test_each_prune_removes_what_is_past_its_horizon_and_keeps_what_a_flow_still_needs(
    deps: NotifyDeps, conn: asyncpg.Connection
) -> None:
    s = deps.settings
    now = datetime.now(UTC)
    old_send = now - timedelta(days=s.sends_retention_days) - DAY
    finished = uuid.uuid4()  # a campaign that completed long ago
    running = uuid.uuid4()  # one still in progress: a send of it is waiting
    for campaign_id, state in ((finished, "completed"), (running, "running")):
        await conn.execute(
            "INSERT INTO campaigns (id, name, audience, message, kind, state, fanout_done, started_at) "
            "VALUES ($1, 'c', '{}', '{}', 'marketing', $2, true, $3)",
            campaign_id,
            state,
            old_send - DAY,
        )
    future = now + timedelta(days=30)  # due long after the test: no sender would take it anyway
    sends = [
        # (key, status, campaign, created_at, stays)
        ("old-sent", "sent", None, old_send, False),
        ("old-delivered", "delivered", None, old_send, False),
        ("old-skipped", "skipped", None, old_send, False),
        ("old-dead-letter", "failed", None, old_send, False),
        ("old-pending", "pending", None, old_send, True),
        ("old-deferred", "deferred", None, old_send, True),
        ("recent-sent", "sent", None, now - DAY, True),
        ("old-of-finished", "sent", finished, old_send, False),
        ("old-of-running", "sent", running, old_send, True),
        ("waiting-of-running", "deferred", running, old_send, True),
    ]
    for key, status, of_campaign, created_at, _ in sends:
        await conn.execute(
            "INSERT INTO sends (idempotency_key, member_id, campaign_id, kind, status, dead, due_at, created_at) "
            "VALUES ($1, 'm1', $2, 'marketing', $3, $4, $5, $6)",
            key,
            of_campaign,
            status,
            key == "old-dead-letter",
            future,
            created_at,
        )

    old_delivery = now - timedelta(days=s.deliveries_retention_days) - DAY
    deliveries = [
        ("old-sent", "sent", old_delivery, False),
        ("old-rejected", "rejected", old_delivery, False),
        ("old-unknown", "unknown", old_delivery, False),
        ("old-pending", "pending", old_delivery, True),  # a retry waiting for its time
        ("recent-sent", "sent", now - timedelta(hours=1), True),
    ]
    for source, status, created_at, _ in deliveries:
        await conn.execute(
            "INSERT INTO deliveries (channel, appid, openid, source_event_id, body, status, created_at, available_at) "
            "VALUES ('customer_service', $1, 'o1', $2, '{}', $3, $4, $5)",
            OA,
            source,
            status,
            created_at,
            future,
        )

    windows = [("expired-long-ago", now - 2 * DAY, False), ("just-expired", now - timedelta(hours=1), True)]
    windows.append(("open", now + DAY, True))
    for openid, expires_at, _ in windows:
        await conn.execute(
            "INSERT INTO service_windows (appid, openid, expires_at, remaining) VALUES ($1, $2, $3, 0)",
            OA,
            openid,
            expires_at,
        )

    old_grant = now - timedelta(days=s.grants_retention_days) - DAY
    for openid, granted_at in (("old", old_grant), ("recent", now - DAY)):
        await conn.execute(
            "INSERT INTO authorisation_grants (appid, openid, template_id, source, granted_at) "
            "VALUES ($1, $2, 't', 'push', $3)",
            MP,
            openid,
            granted_at,
        )

    long_ago = now - retention.SPENT_AUTHORISATION_AFTER - DAY
    authorisations = [
        ("spent-long-ago", 0, False, long_ago, False),
        ("spent-today", 0, False, now, True),  # a failing send may still give it back
        ("unspent", 2, False, long_ago, True),
        ("long-term", 0, True, long_ago, True),
    ]
    for openid, remaining, long_term, updated_at, _ in authorisations:
        await conn.execute(
            "INSERT INTO authorisations (appid, openid, template_id, remaining, long_term, updated_at) "
            "VALUES ($1, $2, 't', $3, $4, $5)",
            MP,
            openid,
            remaining,
            long_term,
            updated_at,
        )

    this_week = beijing_week(now)
    weeks = [("this", this_week, True), ("last", this_week - timedelta(weeks=1), True)]
    weeks.append(("two-ago", this_week - timedelta(weeks=2), False))
    for member, week, _ in weeks:
        await conn.execute(
            "INSERT INTO marketing_caps (member_id, week, week_count, day, day_count) VALUES ($1, $2, 3, $2, 1)",
            member,
            week,
        )

    old_order = now - retention.ABANDONED_CLOSED_AFTER - DAY
    orders = [
        ("1", "reminded", old_order, False),
        ("2", "paid", old_order, False),
        ("3", "cancelled", old_order, False),
        ("4", "waiting", old_order, True),  # a reminder not yet sent
        ("5", "reminded", now - DAY, True),
    ]
    for order_id, state, created_at, _ in orders:
        await conn.execute(
            "INSERT INTO abandoned_orders (order_id, member_id, title, paid_fen, due_at, state, created_at) "
            "VALUES ($1, 'm1', 't', 100, $2, $3, $4)",
            order_id,
            future,
            state,
            created_at,
        )

    # Another replica holding the turn: this one leaves the round to it.
    async with deps.db.take_turns(retention.JOB) as mine:
        assert mine
        assert await retention.prune_once(deps) == NOTHING

    assert await retention.prune_once(deps) == {
        "recaps_frozen": 1,
        "sends": 5,
        "deliveries": 3,
        "service_windows": 1,
        "authorisation_grants": 1,
        "authorisations": 1,
        "marketing_caps": 1,
        "abandoned_orders": 3,
    }
    assert await retention.prune_once(deps) == NOTHING

    async def left(sql: str) -> set[str]:
        return {r[0] for r in await conn.fetch(sql)}

    assert await left("SELECT idempotency_key FROM sends") == {k for k, *_, stays in sends if stays}
    assert await left("SELECT source_event_id FROM deliveries") == {k for k, *_, stays in deliveries if stays}
    assert await left("SELECT openid FROM service_windows") == {k for k, _, stays in windows if stays}
    assert await left("SELECT openid FROM authorisation_grants") == {"recent"}
    assert await left("SELECT openid FROM authorisations") == {k for k, *_, stays in authorisations if stays}
    assert await left("SELECT member_id FROM marketing_caps") == {k for k, _, stays in weeks if stays}
    assert await left("SELECT order_id FROM abandoned_orders") == {k for k, *_, stays in orders if stays}
    # The finished campaign's recap was stored before its send went; the running one has none.
    recaps = {r["id"]: r["recap"] for r in await conn.fetch("SELECT id, recap FROM campaigns")}
    assert recaps[running] is None
    assert recaps[finished] is not None and (recaps[finished]["targeted"], recaps[finished]["sent"]) == (1, 1)


async def test_a_horizon_of_zero_keeps_everything(deps: NotifyDeps, conn: asyncpg.Connection) -> None:
    off = {"sends_retention_days": 0, "deliveries_retention_days": 0, "grants_retention_days": 0}
    deps.settings = deps.settings.model_copy(update=off)
    long_ago = datetime.now(UTC) - timedelta(days=3650)
    await conn.execute(
        "INSERT INTO sends (idempotency_key, member_id, kind, status, created_at) VALUES ('k', 'm', 'marketing', 'sent', $1)",
        long_ago,
    )
    await conn.execute(
        "INSERT INTO deliveries (channel, appid, openid, source_event_id, body, status, created_at) "
        "VALUES ('customer_service', $1, 'o', 'e', '{}', 'sent', $2)",
        OA,
        long_ago,
    )
    await conn.execute(
        "INSERT INTO authorisation_grants (appid, openid, template_id, source, granted_at) VALUES ($1, 'o', 't', 'app', $2)",
        MP,
        long_ago,
    )
    assert await retention.prune_once(deps) == NOTHING


# ---------------------------------------------------------------------------------------------
# every delete walks its index

RECENT, OLD = 20_000, 200

# table: (the prune's predicate, its index, the horizon's value, the statement that fills it with
# $1 rows of age $2 (an interval), a few of them of each kind the prune must skip)
PRUNES: dict[str, tuple[str, str, Any, str]] = {
    "sends": (
        SENDS_EXPIRED,
        "ix_sends_done_created_at",
        datetime.now(UTC) - timedelta(days=180),
        "INSERT INTO sends (idempotency_key, member_id, kind, status, created_at) "
        "SELECT gen_random_uuid()::text, 'm' || g % 5000, 'marketing', "
        "(ARRAY['sent', 'delivered', 'skipped', 'failed', 'pending'])[1 + g % 5], now() - $2::interval "
        "FROM generate_series(1, $1) AS g",
    ),
    "deliveries": (
        DELIVERIES_EXPIRED,
        "ix_deliveries_done_created_at",
        datetime.now(UTC) - timedelta(days=14),
        "INSERT INTO deliveries (channel, appid, openid, body, status, created_at) "
        "SELECT 'customer_service', 'wx1', 'o' || g, '{}', (ARRAY['sent', 'failed', 'pending'])[1 + g % 3], "
        "now() - $2::interval FROM generate_series(1, $1) AS g",
    ),
    "service_windows": (
        WINDOWS_EXPIRED,
        "ix_service_windows_expires_at",
        datetime.now(UTC) - DAY,
        "INSERT INTO service_windows (appid, openid, expires_at, remaining) "
        "SELECT 'wx1', gen_random_uuid()::text, now() + interval '2 days' - $2::interval, 5 "
        "FROM generate_series(1, $1) AS g",
    ),
    "authorisation_grants": (
        GRANTS_EXPIRED,
        "ix_authorisation_grants_granted_at",
        datetime.now(UTC) - timedelta(days=400),
        "INSERT INTO authorisation_grants (appid, openid, template_id, source, granted_at) "
        "SELECT 'wx1', 'o' || g, 't', 'push', now() - $2::interval FROM generate_series(1, $1) AS g",
    ),
    "authorisations": (
        AUTHORISATIONS_SPENT,
        "ix_authorisations_spent",
        datetime.now(UTC) - timedelta(days=30),
        "INSERT INTO authorisations (appid, openid, template_id, remaining, long_term, updated_at) "
        "SELECT 'wx1', gen_random_uuid()::text, 't', g % 2, g % 7 = 0, now() - $2::interval "
        "FROM generate_series(1, $1) AS g",
    ),
    "marketing_caps": (
        CAPS_PAST,
        "ix_marketing_caps_week",
        date.today() - timedelta(days=14),
        "INSERT INTO marketing_caps (member_id, week, week_count, day, day_count) "
        "SELECT gen_random_uuid()::text, (now() - $2::interval)::date - g % 7, 1, current_date, 1 "
        "FROM generate_series(1, $1) AS g",
    ),
    "abandoned_orders": (
        ABANDONED_CLOSED,
        "ix_abandoned_orders_closed",
        datetime.now(UTC) - timedelta(days=30),
        "INSERT INTO abandoned_orders (order_id, member_id, title, paid_fen, due_at, state, created_at) "
        "SELECT replace(gen_random_uuid()::text, '-', ''), 'm', 't', 1, now(), (ARRAY['reminded', 'paid', 'waiting'])[1 + g % 3], "
        "now() - $2::interval FROM generate_series(1, $1) AS g",
    ),
}


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_every_prune_finds_its_batch_through_its_index(
    deps: NotifyDeps, conn: asyncpg.Connection, plan_cache_mode: str
) -> None:
    """Tables the size of a busy period with a few expired rows: each batch comes from the prune's
    index, for the first executions (custom plans) and once PostgreSQL switches to a generic plan."""
    await conn.execute(
        "INSERT INTO campaigns (id, name, audience, message, kind, state, recap) "
        "SELECT gen_random_uuid(), 'c', '{}', '{}', 'marketing', 'completed', '{}' FROM generate_series(1, 50)"
    )
    for fill in {p[3] for p in PRUNES.values()}:
        await conn.execute(fill, RECENT, timedelta(hours=1))
        await conn.execute(fill, OLD, timedelta(days=500))
    await conn.execute(f"ANALYZE campaigns, {', '.join(PRUNES)}")
    await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
    try:
        for table, (predicate, index, before, _) in PRUNES.items():
            scans = await plan_scans(conn, batch_delete_sql(table, predicate), before)
            # The batch comes from the index (walked, or read as a bitmap when the rows it points
            # to are scattered); the outer DELETE finds the batch by ctid; the table is never read whole.
            assert index in {i for _, _, i in scans}, (table, scans)
            assert ("Seq Scan", table, None) not in scans, (table, scans)
            assert ("Tid Scan", table, None) in scans, (table, scans)
    finally:
        await conn.execute("RESET plan_cache_mode")


async def test_a_receipt_and_an_order_attribution_find_their_send_through_an_index(conn: asyncpg.Connection) -> None:
    """Sends the size of a busy half-year: a ``subscribe_msg_sent_event`` receipt (app, openid,
    template) and an order's attribution (is the order attributed yet?) each read an index."""
    await conn.execute(
        "INSERT INTO sends (idempotency_key, member_id, kind, status, appid, openid, template_id, sent_at, order_id,"
        " created_at) SELECT gen_random_uuid()::text, 'm' || g % 5000, 'marketing',"
        " (ARRAY['sent', 'delivered', 'skipped'])[1 + g % 3], 'wx1', 'o' || g % 5000, 't' || g % 7, now(),"
        " CASE WHEN g % 10 = 0 THEN 'ord' || g END, now() FROM generate_series(1, $1) AS g",
        RECENT,
    )
    await conn.execute("ANALYZE sends")
    receipt = await plan_scans(conn, sends_sql._RECEIPT_BY_TEMPLATE, "wx1", "o42", "t0", True, None)
    assert ("Seq Scan", "sends", None) not in receipt and "ix_sends_receipt" in {i for _, _, i in receipt}, receipt
    ordered = await plan_scans(conn, sends_sql._ORDERED, "m42", "ord420", datetime.now(UTC), 86_400.0)
    assert ("Seq Scan", "sends", None) not in ordered and "ix_sends_order_id" in {i for _, _, i in ordered}, ordered
