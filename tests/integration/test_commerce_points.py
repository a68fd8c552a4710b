"""The points ledger: concurrent redemptions, refunds after spending, merges, expiry on both sides of
its boundary, the mall's reserve/fulfil/commit, check-ins, and the reconciliation that checks it all."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.commerce.jobs import housekeeping_once
from services.commerce.points.service import PointsService
from services.commerce.rewards.schemas import Fulfilment
from tests.integration import commerce_fixtures
from tests.integration.commerce_fixtures import Commerce
from tests.integration.test_commerce_orders import sku

pytestmark = pytest.mark.integration
commerce = commerce_fixtures.commerce

PROBLEMS = "https://siyu.dev/problems/"


def new_member() -> str:
    return str(uuid.uuid4())


async def credit(c: Commerce, member_id: str, points: int, key: str | None = None) -> None:
    """Available points through the ledger's own posting (an operator's credit)."""
    async with c.deps.db.unit_of_work() as uow:
        await PointsService(uow, c.deps.settings, c.clock()).earn_available(
            member_id, points, rule="adjust", idem_key=key or f"test:{uuid.uuid4()}"
        )


async def reward(c: Commerce, cost: int, stock: int = 100, kind: str = "coupon") -> str:
    reward_id = f"rw-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"reward_id": reward_id, "title": "券", "kind": kind, "cost_points": cost, "stock": stock}
    if kind == "coupon":
        body["coupon"] = {"discount_fen": 500, "validity_days": 7}
    r = await c.api.post("/internal/admin/rewards", json=body)
    assert r.status_code == 201, r.text
    return reward_id


async def redeem(c: Commerce, member_id: str, reward_id: str, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key or str(uuid.uuid4())}
    return await c.api.post(f"/internal/members/{member_id}/rewards/{reward_id}/redemptions", headers=headers)


async def test_ten_concurrent_redemptions_of_one_balance_never_double_spend(commerce: Commerce) -> None:
    c = commerce
    member = new_member()
    await credit(c, member, 100)
    rid = await reward(c, cost=30)
    answers = await asyncio.gather(*(redeem(c, member, rid) for _ in range(10)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] * 3 + [409] * 7
    assert {r.json()["type"] for r in answers if r.status_code == 409} == {PROBLEMS + "insufficient-points"}
    assert (await c.points(member))["available"] == 10
    assert await c.val("SELECT remaining FROM rewards WHERE reward_id = $1", rid) == 97
    assert await c.val("SELECT count(*) FROM coupons WHERE member_id = $1", member) == 3
    assert len(await c.published("commerce.reward.redeemed")) == 3
    await c.ledger_check()


async def test_the_last_item_is_sold_once_and_a_sold_out_redemption_writes_nothing(commerce: Commerce) -> None:
    c = commerce
    members = [new_member() for _ in range(5)]
    for m in members:
        await credit(c, m, 50)
    rid = await reward(c, cost=10, stock=1)
    answers = await asyncio.gather(*(redeem(c, m, rid) for m in members))
    assert sorted(r.status_code for r in answers) == [201, 409, 409, 409, 409]
    assert {r.json()["type"] for r in answers if r.status_code == 409} == {PROBLEMS + "sold-out"}
    assert await c.val("SELECT count(*) FROM redemptions") == 1
    assert sorted([(await c.points(m))["available"] for m in members]) == [40, 50, 50, 50, 50]
    await c.ledger_check()


async def test_a_redemption_answers_the_contract_and_replays_by_key(commerce: Commerce) -> None:
    c = commerce
    member = new_member()
    await credit(c, member, 100)
    rid = await reward(c, cost=40)
    first = await redeem(c, member, rid, key="k-1")
    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body) == {"redemption_id", "points_spent", "coupon"} and body["points_spent"] == 40
    assert set(body["coupon"]) == {"coupon_id", "title", "expires_at"}
    again = await redeem(c, member, rid, key="k-1")
    assert again.status_code == 201 and again.json() == body
    other = await redeem(c, member, "rw-coupon-other", key="k-1")
    assert other.status_code in (404, 422)
    assert (await c.points(member))["available"] == 60
    coupons = (await c.api.get(f"/internal/members/{member}/coupons")).json()
    assert [x["coupon_id"] for x in coupons] == [body["coupon"]["coupon_id"]]
    assert coupons[0]["state"] == "available"
    ledger = (await c.api.get(f"/internal/members/{member}/points/ledger")).json()
    assert [(e["kind"], e["points"], e["state"]) for e in ledger["entries"]] == [
        ("redeem", -40, "spent"),
        ("adjust", 100, "available"),
    ]
    assert ledger["next_cursor"] is None


async def test_a_failed_fulfilment_releases_points_and_stock(commerce: Commerce) -> None:
    c = commerce
    member = new_member()
    await credit(c, member, 100)
    rid = await reward(c, cost=40, stock=1, kind="product")

    async def broken(f: Fulfilment) -> None:
        raise RuntimeError(f"the warehouse refused {f.redemption_id}")

    c.deps.fulfil = broken
    r = await redeem(c, member, rid, key="fail-1")
    assert r.status_code == 502 and r.json()["type"] == PROBLEMS + "redemption-failed"
    assert (await c.points(member))["available"] == 100
    assert await c.val("SELECT remaining FROM rewards WHERE reward_id = $1", rid) == 1
    assert await c.val("SELECT state FROM redemptions") == "released"
    assert (await redeem(c, member, rid, key="fail-1")).status_code == 502  # the failure replays
    c.deps.fulfil = None
    ok = await redeem(c, member, rid, key="ok-1")
    assert ok.status_code == 201 and "coupon" not in ok.json()
    assert (await c.points(member))["available"] == 60
    ledger = (await c.api.get(f"/internal/members/{member}/points/ledger")).json()["entries"]
    assert [(e["kind"], e["points"], e["state"]) for e in ledger] == [
        ("redeem", -40, "spent"),
        ("redeem", 40, "released"),
        ("redeem", -40, "spent"),
        ("adjust", 100, "available"),
    ]
    await c.ledger_check()


async def test_a_reservation_left_by_a_dead_process_is_released(commerce: Commerce) -> None:
    from services.commerce.rewards.service import RewardService

    c = commerce
    member = new_member()
    await credit(c, member, 50)
    rid = await reward(c, cost=50, stock=1)
    async with c.deps.db.unit_of_work() as uow:  # reserve, then the process dies before fulfilling
        await RewardService(uow, c.deps.settings, c.clock()).reserve(member, rid, "crashed")
    assert (await c.points(member))["available"] == 0
    assert (await housekeeping_once(c.deps))["redemptions_released"] == 0
    c.clock.advance(seconds=c.deps.settings.redemption_stale_seconds + 1)
    assert (await housekeeping_once(c.deps))["redemptions_released"] == 1
    assert (await c.points(member))["available"] == 50
    assert await c.val("SELECT remaining FROM rewards WHERE reward_id = $1", rid) == 1
    await c.ledger_check()


async def test_a_refund_after_spending_leaves_a_bounded_negative_balance_shown_in_the_ledger(
    commerce: Commerce,
) -> None:
    c = commerce
    user = await c.sandbox.user()
    tea = await sku(c)
    order_id = await c.sandbox.order(user, tea)  # 68 points
    for action in ("pay", "ship", "confirm", "settle"):
        await c.sandbox.act(order_id, action)
    await c.deliver_pushes()
    member = await c.member_of(user)
    rid = await reward(c, cost=50)
    assert (await redeem(c, member, rid)).status_code == 201
    sale = await c.sandbox.aftersale(order_id, tea["sku_id"], kind="RETURN")
    await c.sandbox.close_aftersale(sale, "refund")
    await c.deliver_pushes()
    points = await c.points(member)
    assert points["available"] == -50  # 18 unspent taken back, 50 spent owed: never more than the order earned
    reversed_ = (await c.published("commerce.points.reversed"))[0]["data"]
    assert reversed_["points"] == 68 and reversed_["negative"] is True
    ledger = (await c.api.get(f"/internal/members/{member}/points/ledger")).json()["entries"]
    assert [(e["kind"], e["points"]) for e in ledger] == [("reverse", -68), ("redeem", -50), ("earn", 68)]
    assert ledger[0]["order_id"] == order_id and ledger[2]["state"] == "available"
    assert (await redeem(c, member, rid)).json()["type"] == PROBLEMS + "insufficient-points"
    # The next points repay the debt first.
    assert (await c.api.post(f"/internal/members/{member}/checkins")).status_code == 201
    assert (await c.points(member))["available"] == -45
    await c.ledger_check()


async def test_a_merge_moves_lots_balances_and_orders_to_the_survivor_once(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    order_id = await c.sandbox.order(user, await sku(c))
    await c.sandbox.act(order_id, "pay")
    await c.deliver_pushes()
    merged = await c.member_of(user)
    await credit(c, merged, 30)
    survivor = new_member()
    await credit(c, survivor, 5)
    assert await c.merge(merged, survivor) == "handled"
    assert await c.points(survivor) == {"available": 35, "pending": 68, "expiring": []}
    assert await c.points(merged) == {"available": 0, "pending": 0, "expiring": []}
    assert await c.val("SELECT member_id FROM orders WHERE order_id = $1", order_id) == survivor
    assert await c.val("SELECT count(*) FROM points_lots WHERE member_id = $1", merged) == 0
    # Replayed (a new event id for the same merge): nothing moves twice.
    assert await c.merge(merged, survivor) == "handled"
    assert (await c.points(survivor))["available"] == 35
    # The order settles after the merge: its points become available for the survivor.
    for action in ("ship", "confirm", "settle"):
        await c.sandbox.act(order_id, action)
    await c.deliver_pushes()
    assert await c.points(survivor) == {"available": 103, "pending": 0, "expiring": []}
    orders = (await c.api.get(f"/internal/members/{survivor}/orders")).json()
    assert [o["order_id"] for o in orders] == [order_id]
    await c.ledger_check()


async def test_expiry_on_both_sides_of_the_boundary_and_the_notice_ahead(commerce: Commerce) -> None:
    c = commerce
    t0 = datetime(2026, 1, 1, 4, 0, tzinfo=UTC)
    c.clock.freeze(t0)
    member = new_member()
    await credit(c, member, 40)
    c.clock.freeze(t0 + timedelta(days=10))
    await credit(c, member, 60)
    validity = timedelta(days=c.deps.settings.points_validity_days)
    notice = timedelta(days=c.deps.settings.points_notice_days)
    first_expiry = t0 + validity

    c.clock.freeze(first_expiry - notice - timedelta(seconds=1))
    assert (await housekeeping_once(c.deps))["expiring_notices"] == 0
    c.clock.freeze(first_expiry - notice)
    assert (await housekeeping_once(c.deps))["expiring_notices"] == 1
    assert (await housekeeping_once(c.deps))["expiring_notices"] == 0  # each lot announced once
    notice_event = (await c.published("commerce.points.expiring"))[0]["data"]
    assert notice_event["points"] == 40 and notice_event["member_id"] == member
    assert datetime.fromisoformat(notice_event["expires_at"]) == first_expiry
    summary = await c.points(member)
    assert [(e["points"], datetime.fromisoformat(e["expires_at"])) for e in summary["expiring"]] == [(40, first_expiry)]

    c.clock.freeze(first_expiry - timedelta(microseconds=1))
    assert (await housekeeping_once(c.deps))["points_expired"] == 0
    assert (await c.points(member))["available"] == 100
    c.clock.freeze(first_expiry)
    assert (await housekeeping_once(c.deps))["points_expired"] == 40
    assert (await c.points(member))["available"] == 60
    assert (await housekeeping_once(c.deps))["points_expired"] == 0
    ledger = (await c.api.get(f"/internal/members/{member}/points/ledger")).json()["entries"]
    assert [(e["kind"], e["points"], e["state"]) for e in ledger] == [
        ("expire", -40, "expired"),
        ("adjust", 60, "available"),
        ("adjust", 40, "expired"),
    ]
    await c.ledger_check()


async def test_fifo_spends_the_lot_that_expires_first(commerce: Commerce) -> None:
    c = commerce
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    member = new_member()
    c.clock.freeze(t0)
    await credit(c, member, 30)
    c.clock.freeze(t0 + timedelta(days=1))
    await credit(c, member, 30)
    rid = await reward(c, cost=40)
    assert (await redeem(c, member, rid)).status_code == 201
    remaining = [r["remaining"] for r in await c.sql("SELECT remaining FROM points_lots ORDER BY lot_id")]
    assert remaining == [0, 20]
    c.clock.freeze(t0 + timedelta(days=c.deps.settings.points_validity_days))
    assert (await housekeeping_once(c.deps))["points_expired"] == 0  # the first lot was spent
    await c.ledger_check()


async def test_one_checkin_per_beijing_day_under_concurrent_taps_with_a_streak_bonus(commerce: Commerce) -> None:
    c = commerce
    member = new_member()
    # 23:30 in Beijing on day 1 is 15:30 UTC.
    day1 = datetime(2026, 5, 1, 15, 30, tzinfo=UTC)
    c.clock.freeze(day1)
    taps = await asyncio.gather(*(c.api.post(f"/internal/members/{member}/checkins") for _ in range(8)))
    assert sorted(r.status_code for r in taps) == [201] + [409] * 7
    assert [r.json() for r in taps if r.status_code == 201] == [{"points": 5, "streak": 1}]
    assert {r.json()["type"] for r in taps if r.status_code == 409} == {PROBLEMS + "already-checked-in"}
    c.clock.freeze(day1 + timedelta(minutes=29))  # 23:59 Beijing: the same day
    assert (await c.api.post(f"/internal/members/{member}/checkins")).status_code == 409
    streak: list[Any] = []
    for n in range(1, 7):  # 00:05 Beijing each following day
        c.clock.freeze(day1 + timedelta(days=n - 1, minutes=35))
        streak.append((await c.api.post(f"/internal/members/{member}/checkins")).json())
    assert streak[-1] == {"points": 25, "streak": 7}  # the 7th day earns the bonus
    assert (await c.points(member))["available"] == 5 * 7 + 20
    c.clock.freeze(day1 + timedelta(days=8))  # a day skipped: the streak starts again
    assert (await c.api.post(f"/internal/members/{member}/checkins")).json() == {"points": 5, "streak": 1}
    await c.ledger_check()


async def test_the_ledger_pages_newest_first_with_a_cursor(commerce: Commerce) -> None:
    c = commerce
    member = new_member()
    for n in range(5):
        await credit(c, member, n + 1)
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await c.api.get(f"/internal/members/{member}/points/ledger", params=params)).json()
        seen += [e["points"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]


async def test_the_reconciliation_finds_a_corrupted_account_and_repair_rewrites_it_from_the_ledger(
    commerce: Commerce,
) -> None:
    from services.commerce.reconcile import check, repair

    c = commerce
    member = new_member()
    await credit(c, member, 120)
    await c.sql("UPDATE points_accounts SET available = 999 WHERE member_id = $1", member)
    _, accounts, _ = await check(c.deps.db)
    assert [str(a["member_id"]) for a in accounts] == [member]
    await repair(c.deps.db, [member])
    assert (await c.points(member))["available"] == 120
    await c.ledger_check()
