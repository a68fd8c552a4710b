"""Flows 3 and 5 through real processes, as the mini-program walks them: a member's shop order
becomes points they see, and they spend them in the points mall.

sandbox user → ``wx.login`` code → gateway ``POST /api/v1/sessions`` → a shop order paid, shipped,
confirmed and settled in the sandbox, whose pushes reach the gateway's callback endpoint → the relay
→ RabbitMQ → commerce (which re-reads the order from the sandbox) → ``GET /api/v1/me`` shows the
points pending, then available → ``POST /api/v1/rewards/{id}/redemptions`` spends them once, however
often it is retried → the coupon is the member's → the operator sees it all in the member 360.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from shared.settings import DEV_ADMIN_TOKEN
from tests.e2e.conftest import Stack
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

MP = "wx0000000000000002"
TEA_250G_FEN = 12800


def _ok(response: httpx.Response, *statuses: int) -> Any:
    assert response.status_code in (statuses or (200,)), response.text
    return response.json()


async def test_a_member_earns_points_in_the_shop_and_redeems_them_once(stack: Stack) -> None:
    gateway, sandbox, commerce = (
        stack.client("gateway"),
        stack.client("sandbox"),
        stack.client("commerce", internal=True),
    )

    # The member opens the mini-program and signs in.
    user = _ok(await sandbox.post("/sandbox/users", json={"nickname": "Mei", "unionid_bound": True}), 200, 201)
    code = (_ok(await sandbox.post(f"/sandbox/users/{user['user_id']}/login-code", json={"appid": MP})))["code"]
    session = _ok(await gateway.post("/api/v1/sessions", json={"code": code}), 201)
    auth = {"Authorization": f"Bearer {session['token']}"}
    me = _ok(await gateway.get("/api/v1/me", headers=auth))
    assert me["member_id"] == session["member_id"]
    assert me["tier"] == "base" and me["points"] == {"available": 0, "pending": 0, "expiring": []}

    # They buy 250 g of tea (¥128) in the shop and pay.
    products = _ok(await sandbox.get("/sandbox/shop/products"))
    product, sku = next((p, s) for p in products for s in p["skus"] if s["sale_price"] == TEA_250G_FEN)
    item = {"product_id": product["product_id"], "sku_id": sku["sku_id"], "count": 1}
    order = _ok(await sandbox.post("/sandbox/shop/orders", json={"user_id": user["user_id"], "items": [item]}), 201)
    order_id = order["order_id"]
    _ok(await sandbox.post(f"/sandbox/shop/orders/{order_id}/pay", json={}))

    async def points_are(expected: dict[str, int]) -> bool:
        # Waits read commerce itself: polling the gateway would spend the member's rate limit.
        body = _ok(await commerce.get(f"/internal/members/{session['member_id']}/points"))
        return bool({k: body["points"][k] for k in expected} == expected)

    await eventually(lambda: points_are({"available": 0, "pending": 128}), what="the order's points pending")
    me = _ok(await gateway.get("/api/v1/me", headers=auth))
    assert me["points"] == {"available": 0, "pending": 128, "expiring": []}

    # The shop ships, the member confirms, the after-sale window passes: the points are theirs.
    for action in ("ship", "confirm", "settle"):
        _ok(await sandbox.post(f"/sandbox/shop/orders/{order_id}/{action}", json={}))
    await eventually(lambda: points_are({"available": 128, "pending": 0}), what="the points available")
    me = _ok(await gateway.get("/api/v1/me", headers=auth))
    assert me["points"]["available"] == 128 and me["points"]["pending"] == 0
    ledger = _ok(await gateway.get("/api/v1/me/points/ledger", headers=auth))
    assert [(e["kind"], e["points"], e["state"], e.get("order_id")) for e in ledger["entries"]] == [
        ("earn", 128, "available", order_id)
    ]
    orders = _ok(await gateway.get("/api/v1/me/orders", headers=auth))
    assert orders == [{"order_id": order_id, "status": 100, "paid_fen": TEA_250G_FEN, "is_gift": False, "points": 128}]

    # The brand stocks a ¥10 coupon for 100 points (commerce's operator route); the mall shows it.
    reward_id = f"rw-e2e-{uuid.uuid4().hex[:8]}"
    reward = {
        "reward_id": reward_id,
        "title": "满50减10",
        "kind": "coupon",
        "cost_points": 100,
        "stock": 10,
        "coupon": {"discount_fen": 1000, "min_spend_fen": 5000},
    }
    _ok(await commerce.post("/internal/admin/rewards", json=reward), 201)
    mall = _ok(await gateway.get("/api/v1/rewards", headers=auth))
    assert {"reward_id": reward_id, "title": "满50减10", "cost_points": 100, "kind": "coupon", "remaining": 10} in mall

    # Redeeming needs an Idempotency-Key; with one, a retry is the same redemption.
    path = f"/api/v1/rewards/{reward_id}/redemptions"
    refused = await gateway.post(path, headers=auth)
    assert refused.status_code == 400 and refused.json()["type"].endswith("/idempotency-key-required")
    headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    redemption = _ok(await gateway.post(path, headers=headers), 201)
    assert redemption["points_spent"] == 100 and redemption["coupon"]["title"] == "满50减10"
    retried = await gateway.post(path, headers=headers)
    assert retried.status_code == 201 and retried.json() == redemption
    assert retried.headers["Idempotent-Replayed"] == "true"

    # Spent once; a second redemption finds too few points.
    assert (_ok(await gateway.get("/api/v1/me", headers=auth)))["points"]["available"] == 28
    again = await gateway.post(path, headers={**auth, "Idempotency-Key": str(uuid.uuid4())})
    assert again.status_code == 409 and again.json()["type"].endswith("/insufficient-points")
    coupons = _ok(await gateway.get("/api/v1/me/coupons", headers=auth))
    assert [c["coupon_id"] for c in coupons if c["title"] == "满50减10"] == [redemption["coupon"]["coupon_id"]]
    mall = _ok(await gateway.get("/api/v1/rewards", headers=auth))
    assert next(r["remaining"] for r in mall if r["reward_id"] == reward_id) == 9

    # The operator sees the same member whole.
    admin = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
    view = _ok(await gateway.get(f"/admin/v1/members/{session['member_id']}", headers=admin))
    assert view["tier"] == "base" and view["points"]["available"] == 28 and view["unavailable"] == []
    assert [o["order_id"] for o in view["orders"]] == [order_id]
    assert [e["kind"] for e in view["points"]["ledger"]] == ["redeem", "earn"]
    assert (await gateway.get(f"/admin/v1/members/{session['member_id']}")).status_code == 401
