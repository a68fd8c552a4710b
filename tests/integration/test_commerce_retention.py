"""commerce's retention: VIP-discount reservations and check-ins past their horizon go, recent ones
stay (a retried use still gets its first answer, a streak still continues from yesterday), the
ledger keeps every check-in's points, and each delete walks an index (services/commerce/retention.py,
README "Retention")."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Any

import pytest

from services.commerce import retention
from services.commerce.checkins.repository import CHECKINS_EXPIRED
from services.commerce.checkins.service import BEIJING, beijing_day
from services.commerce.checkout.repository import RESERVATIONS_EXPIRED
from shared.db import batch_delete_sql
from tests.integration import commerce_fixtures
from tests.integration.commerce_fixtures import MP, Commerce
from tests.plans import plan_scans

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

commerce = commerce_fixtures.commerce


def use(unique_id: str) -> dict[str, Any]:
    order_info = {"unique_id": unique_id, "order_session_id": "s1", "price_info": {"vip_discounted_price": 100}}
    return {"appid": MP, "openid": "oMpBuyer1", "payload": {"order_info": order_info}}


async def test_old_reservations_and_checkins_go_and_what_is_still_read_stays(commerce: Commerce) -> None:
    c = commerce
    s = c.deps.settings
    for unique_id in ("u-old-reserved", "u-old-released", "u-new"):
        assert (await c.api.post("/internal/shop/vip-discount/use", json=use(unique_id))).json()["result"] == 1
    await c.api.post("/internal/shop/vip-discount/release", json=use("u-old-released"))
    # Two of them were made longer ago than the horizon, whatever became of them.
    await c.sql(
        "UPDATE vip_discount_reservations SET created_at = created_at - $1::interval WHERE unique_id LIKE 'u-old-%'",
        timedelta(days=s.vip_reservation_retention_days + 1),
    )

    # Check-ins on two days more than the horizon ago, then yesterday and today.
    member = str(uuid.uuid4())
    today = beijing_day(c.clock())
    first = today - timedelta(days=s.checkins_retention_days + 2)
    for day in (first, first + timedelta(days=1), today - timedelta(days=1), today):
        c.clock.freeze(datetime.combine(day, time(12), BEIJING))
        assert (await c.api.post(f"/internal/members/{member}/checkins")).status_code == 201

    # Another replica holding the turn: this one leaves the round to it.
    async with c.deps.db.take_turns(retention.JOB) as mine:
        assert mine
        assert await retention.prune_once(c.deps) == {"vip_discount_reservations": 0, "checkins": 0}

    assert await retention.prune_once(c.deps) == {"vip_discount_reservations": 2, "checkins": 2}
    assert await retention.prune_once(c.deps) == {"vip_discount_reservations": 0, "checkins": 0}

    assert [r[0] for r in await c.sql("SELECT unique_id FROM vip_discount_reservations")] == ["u-new"]
    # WeChat retrying the recent use still gets the first answer.
    assert (await c.api.post("/internal/shop/vip-discount/use", json=use("u-new"))).json()["result"] == 1
    days = await c.sql("SELECT day FROM checkins WHERE member_id = $1 ORDER BY day", member)
    assert [r["day"] for r in days] == [today - timedelta(days=1), today]
    # The streak continues from yesterday; the ledger still holds every check-in's points.
    c.clock.freeze(datetime.combine(today + timedelta(days=1), time(12), BEIJING))
    assert (await c.api.post(f"/internal/members/{member}/checkins")).json()["streak"] == 3
    entries = await c.val("SELECT count(*) FROM points_entries WHERE member_id = $1 AND kind = 'checkin'", member)
    assert entries == 5
    await c.ledger_check()


async def test_a_horizon_of_zero_keeps_everything(commerce: Commerce) -> None:
    c = commerce
    c.deps.settings = c.deps.settings.model_copy(
        update={"vip_reservation_retention_days": 0, "checkins_retention_days": 0}
    )
    assert (await c.api.post("/internal/shop/vip-discount/use", json=use("u-1"))).json()["result"] == 1
    await c.sql("UPDATE vip_discount_reservations SET created_at = now() - interval '10 years'")
    await c.sql("INSERT INTO checkins (member_id, day, streak, points) VALUES ('m', '2015-01-01', 1, 5)")
    assert await retention.prune_once(c.deps) == {"vip_discount_reservations": 0, "checkins": 0}


# ---------------------------------------------------------------------------------------------
# every delete walks its index

PRUNES: dict[str, tuple[str, str, str]] = {
    "vip_discount_reservations": (
        RESERVATIONS_EXPIRED,
        "ix_vip_discount_reservations_created_at",
        "INSERT INTO vip_discount_reservations (unique_id, openid, status, price_info, created_at) "
        "SELECT gen_random_uuid()::text, 'o' || g, (ARRAY['reserved', 'released'])[1 + g % 2], '{}', "
        "now() - make_interval(days => $2) FROM generate_series(1, $1) AS g",
    ),
    "checkins": (
        CHECKINS_EXPIRED,
        "ix_checkins_day",
        "INSERT INTO checkins (member_id, day, streak, points) "
        "SELECT gen_random_uuid()::text, current_date - $2::int - g % 30, 1, 5 FROM generate_series(1, $1) AS g",
    ),
}


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_every_prune_finds_its_batch_through_its_index(commerce: Commerce, plan_cache_mode: str) -> None:
    """Tables the size of a busy period with a few expired rows: each batch comes from the prune's
    index, for the first executions (custom plans) and once PostgreSQL switches to a generic plan."""
    now = commerce.clock()
    horizons = {
        "vip_discount_reservations": now - timedelta(days=180),
        "checkins": beijing_day(now) - timedelta(days=400),
    }
    async with commerce.deps.db.connection() as conn:
        for _, _, fill in PRUNES.values():
            await conn.execute(fill, 20_000, 0)
            await conn.execute(fill, 200, 500)
        await conn.execute(f"ANALYZE {', '.join(PRUNES)}")
        await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        try:
            for table, (predicate, index, _) in PRUNES.items():
                scans = await plan_scans(conn, batch_delete_sql(table, predicate), horizons[table])
                # The batch comes from the index (walked, or read as a bitmap when the rows it points
                # to are scattered); the outer DELETE finds it by ctid; the table is never read whole.
                assert index in {i for _, _, i in scans}, (table, scans)
                assert ("Seq Scan", table, None) not in scans, (table, scans)
                assert ("Tid Scan", table, None) in scans, (table, scans)
        finally:
            await conn.execute("RESET plan_cache_mode")
