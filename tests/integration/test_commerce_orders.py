"""The order mirror and the points it earns, against the sandbox shop, identity and the real database."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.commerce_fixtures import SHOP, Commerce, commerce  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


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
