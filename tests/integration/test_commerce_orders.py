"""The order mirror and the points it earns, against the sandbox shop, identity and the real database."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration import commerce_fixtures
from tests.integration.commerce_fixtures import Commerce

pytestmark = pytest.mark.integration
commerce = commerce_fixtures.commerce


async def sku(c: Commerce, product: int = 0, index: int = 0) -> dict[str, Any]:
    p = (await c.sandbox.products())[product]
    return {"product_id": p["product_id"], "title": p["title"], **p["skus"][index]}


async def test_an_order_through_its_life(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    tea = await sku(c)  # 6800 fen
    order_id = await c.sandbox.order(user, tea, count=2)
    await c.deliver_pushes()
    member = await c.member_of(user)
    assert (await c.points(member))["pending"] == 0
    await c.sandbox.act(order_id, "pay")
    await c.deliver_pushes()
    assert await c.points(member) == {"available": 0, "pending": 136, "expiring": []}
    for action in ("ship", "confirm", "settle"):
        await c.sandbox.act(order_id, action)
        await c.deliver_pushes()
    points = await c.points(member)
    assert points["available"] == 136 and points["pending"] == 0
    types = [e["type"] for e in await c.published() if e["type"].startswith("commerce.order.")]
    assert types == [
        "commerce.order.created",
        "commerce.order.paid",
        "commerce.order.shipped",
        "commerce.order.completed",
        "commerce.order.settled",
    ]
    paid = (await c.published("commerce.order.paid"))[0]["data"]
    assert paid["member_id"] == member and paid["paid_fen"] == 13600 and paid["points_pending"] == 136
    assert paid["first_order"] is True and paid["order_id"] == order_id
    r = await c.api.get(f"/internal/members/{member}/orders")
    assert r.json() == [{"order_id": order_id, "status": 100, "paid_fen": 13600, "is_gift": False, "points": 136}]
    history = [row["status"] for row in await c.sql("SELECT status FROM order_status_history ORDER BY id")]
    assert history == [10, 20, 30, 100, 100]
    await c.ledger_check()


async def test_duplicated_pushes_and_redeliveries_post_once(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    order_id = await c.sandbox.order(user, await sku(c))
    await c.sandbox.act(order_id, "pay", push="twice")  # WeChat re-delivers: two gateway events
    envelopes = await c.deliver_pushes()
    assert len(envelopes) == 3
    assert await c.deliver(envelopes[1]) == "duplicate"  # the broker redelivers one: the inbox absorbs it
    member = await c.member_of(user)
    assert (await c.points(member))["pending"] == 68
    assert len(await c.published("commerce.order.paid")) == 1
    assert len(await c.published("commerce.points.earned")) == 1
    assert await c.val("SELECT count(*) FROM points_entries") == 1
    await c.ledger_check()


async def test_out_of_order_pushes_converge(commerce: Commerce) -> None:
    """The settle push arrives first, the pay push last: every step is taken from the fetched order."""
    c = commerce
    user = await c.sandbox.user()
    order_id = await c.sandbox.order(user, await sku(c))
    for action in ("pay", "ship", "confirm", "settle"):
        await c.sandbox.act(order_id, action)
    pushes = list(c.sandbox.pushed)
    c.sandbox.pushed[:] = list(reversed(pushes))
    await c.deliver_pushes()
    member = await c.member_of(user)
    assert await c.points(member) == {"available": 68, "pending": 0, "expiring": []}
    types = [e["type"] for e in await c.published() if e["type"].startswith("commerce.order.")]
    assert types == [
        "commerce.order.created",
        "commerce.order.paid",
        "commerce.order.shipped",
        "commerce.order.completed",
        "commerce.order.settled",
    ]
    await c.ledger_check()


async def test_lost_pushes_are_found_by_the_reconcile(commerce: Commerce) -> None:
    from services.commerce.jobs import reconcile_orders_once

    c = commerce
    user = await c.sandbox.user()
    order_id = await c.sandbox.order(user, await sku(c), push="none")
    for action in ("pay", "ship"):
        await c.sandbox.act(order_id, action, push="none")
    assert c.sandbox.pushed == []
    c.clock.advance(minutes=1)  # the next round (the sandbox's clock ran ahead a few seconds)
    assert await reconcile_orders_once(c.deps) == {"orders_reconciled": 1}
    member = await c.member_of(user)
    assert (await c.points(member))["pending"] == 68
    assert await c.val("SELECT status FROM orders WHERE order_id = $1", order_id) == 30
    sources = {r["source"] for r in await c.sql("SELECT source FROM order_status_history")}
    assert sources == {"reconcile"}
    # A second round finds the same order again (the overlap) and changes nothing.
    await reconcile_orders_once(c.deps)
    assert len(await c.published("commerce.order.paid")) == 1
    assert await c.val("SELECT count(*) FROM points_entries") == 1
    await c.ledger_check()


async def test_a_partial_refund_reverses_in_proportion_and_a_full_one_all(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    tea = await sku(c)
    order_id = await c.sandbox.order(user, tea, count=3)  # 20400 fen: 204 points
    for action in ("pay", "ship", "confirm", "settle"):
        await c.sandbox.act(order_id, action)
    await c.deliver_pushes()
    member = await c.member_of(user)
    assert (await c.points(member))["available"] == 204
    sale = await c.sandbox.aftersale(order_id, tea["sku_id"], count=1)
    await c.sandbox.close_aftersale(sale, "refund")
    await c.deliver_pushes()
    assert (await c.points(member))["available"] == 136  # 204 * 6800 // 20400 = 68 taken back
    refunded = (await c.published("commerce.order.refunded"))[0]["data"]
    assert refunded["refunded_fen"] == 6800 and refunded["points_reversed"] == 68
    sale = await c.sandbox.aftersale(order_id, tea["sku_id"], count=2, kind="RETURN")
    await c.sandbox.close_aftersale(sale, "refund")
    await c.deliver_pushes()
    assert (await c.points(member))["available"] == 0
    assert await c.val("SELECT points FROM orders WHERE order_id = $1", order_id) == 0
    await c.ledger_check()


async def test_a_rejected_aftersale_takes_nothing_back(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    tea = await sku(c)
    order_id = await c.sandbox.order(user, tea)
    await c.sandbox.act(order_id, "pay")
    sale = await c.sandbox.aftersale(order_id, tea["sku_id"])
    await c.sandbox.close_aftersale(sale, "reject")
    await c.deliver_pushes()
    member = await c.member_of(user)
    assert (await c.points(member))["pending"] == 68
    closed = (await c.published("commerce.aftersale.closed"))[0]["data"]
    assert closed["outcome"] == "rejected" and closed["after_sale_order_id"] == sale
    assert len(await c.published("commerce.aftersale.opened")) == 1


async def test_a_refund_before_settlement_takes_pending_points(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    tea = await sku(c)
    order_id = await c.sandbox.order(user, tea, count=2)
    await c.sandbox.act(order_id, "pay")
    sale = await c.sandbox.aftersale(order_id, tea["sku_id"], count=2)
    await c.sandbox.close_aftersale(sale, "refund")  # everything refunded: the shop cancels (200)
    await c.deliver_pushes()
    member = await c.member_of(user)
    assert await c.points(member) == {"available": 0, "pending": 0, "expiring": []}
    cancelled = (await c.published("commerce.order.cancelled"))[0]["data"]
    assert cancelled["was_paid"] is True and cancelled["cancel_type"] == 3
    assert await c.published("commerce.coupon.issued") == []  # a refunded order is not abandoned
    await c.ledger_check()


async def test_an_unpaid_cancel_earns_nothing_and_brings_an_abandoned_order_coupon_once(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    tea = await sku(c)
    for _ in range(2):
        order_id = await c.sandbox.order(user, tea)
        await c.sandbox.act(order_id, "cancel")
    await c.deliver_pushes()
    member = await c.member_of(user)
    issued = [e["data"] for e in await c.published("commerce.coupon.issued")]
    assert [(i["kind"], i["member_id"]) for i in issued] == [("abandoned_order", member)]
    r = await c.api.get(f"/internal/members/{member}/coupons")
    assert [x["state"] for x in r.json()] == ["available"]
    assert await c.val("SELECT count(*) FROM points_entries") == 0


async def test_the_tier_multiplier_and_a_campaign_bonus(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    tea = await sku(c, index=1)  # 12800 fen
    # ¥128 x 8 = 102400 fen: past silver (100000) with this order, which still earns at base.
    first = await c.sandbox.order(user, tea, count=8)
    await c.sandbox.act(first, "pay")
    await c.deliver_pushes()
    member = await c.member_of(user)
    assert (await c.points(member))["pending"] == 1024
    changed = (await c.published("commerce.tier.changed"))[0]["data"]
    assert (changed["old_tier"], changed["new_tier"], changed["direction"]) == ("base", "silver", "up")
    assert (await c.api.get(f"/internal/members/{member}/points")).json()["tier"] == "silver"
    now = c.clock()
    campaign = {
        "campaign_id": "double-week",
        "name": "double points",
        "bonus_pct": 100,
        "starts_at": (now.replace(year=now.year - 1)).isoformat(),
        "ends_at": (now.replace(year=now.year + 1)).isoformat(),
    }
    assert (await c.api.post("/internal/admin/points-campaigns", json=campaign)).status_code == 201
    assert (await c.api.post("/internal/admin/points-campaigns", json=campaign)).status_code == 409
    second = await c.sandbox.order(user, await sku(c))  # 6800 fen: 68 base, x1.2 = 81, +68 bonus
    await c.sandbox.act(second, "pay")
    await c.deliver_pushes()
    assert (await c.points(member))["pending"] == 1024 + 81 + 68
    kinds = [e["data"]["kind"] for e in await c.published("commerce.coupon.issued")]
    assert kinds == ["tier"]
    await c.ledger_check()


async def test_an_affiliate_sharer_is_attributed_and_shown_to_operators(commerce: Commerce) -> None:
    c = commerce
    sharer = await c.sandbox.user(nickname="小推")
    buyer = await c.sandbox.user()
    # The sharer bought before, so identity knows them as a member.
    own = await c.sandbox.order(sharer, await sku(c))
    await c.deliver_pushes()
    order_id = await c.sandbox.order(buyer, await sku(c, product=2), sharer_user_id=sharer["user_id"])
    await c.sandbox.act(order_id, "pay")
    await c.deliver_pushes()
    sharer_member = await c.member_of(sharer)
    attributed = (await c.published("commerce.affiliate.attributed"))[0]["data"]
    assert attributed["order_id"] == order_id and attributed["sharer_member_id"] == sharer_member
    assert attributed["commission_fen"] == 390
    view = (await c.api.get(f"/internal/admin/members/{sharer_member}")).json()
    assert [o["order_id"] for o in view["affiliate_orders"]] == [order_id]
    assert [o["order_id"] for o in view["orders"]] == [own]
    order = (await c.api.get(f"/internal/admin/orders/{order_id}")).json()
    assert order["affiliate"]["sharer_member_id"] == sharer_member
    assert "sharer_openid" not in order["affiliate"] and "openid" not in order
