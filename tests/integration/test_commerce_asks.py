"""What other services ask commerce for: a member's points by the openid a push came from (notify's
"积分" reply) and the coupon an abandoned-order reminder offers (notify's reminder job)."""

from __future__ import annotations

import uuid

import pytest

from tests.integration import commerce_fixtures
from tests.integration.commerce_fixtures import SHOP, Commerce
from tests.integration.test_commerce_points import PROBLEMS, credit

pytestmark = pytest.mark.integration
commerce = commerce_fixtures.commerce


async def shop_member(c: Commerce, openid: str) -> str:
    r = await c.identity.post("/internal/identities", json={"appid": SHOP, "openid": openid, "source": "shop_order"})
    assert r.status_code == 200, r.text
    return str(r.json()["member_id"])


async def test_points_by_openid_are_the_members_real_balance(commerce: Commerce) -> None:
    c = commerce
    openid = f"o{uuid.uuid4().hex[:20]}"
    member = await shop_member(c, openid)
    await credit(c, member, 1280)
    r = await c.api.get(f"/internal/members/by-openid/{SHOP}/{openid}/points")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "member_id": member,
        "tier": (await c.api.get(f"/internal/members/{member}/points")).json()["tier"],
        "available": 1280,
        "pending": 0,
    }


async def test_points_by_an_unknown_openid_are_a_404_and_create_no_member(commerce: Commerce) -> None:
    c = commerce
    openid = f"o{uuid.uuid4().hex[:20]}"
    r = await c.api.get(f"/internal/members/by-openid/{SHOP}/{openid}/points")
    assert r.status_code == 404 and r.json()["type"] == PROBLEMS + "member-not-found"
    known = await c.identity.post("/internal/resolve", json={"appid": SHOP, "openid": openid})
    assert known.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/internal/members/by-openid/not-an-appid/oX/points",
        f"/internal/members/by-openid/{SHOP}/{'o' * 65}/points",
        f"/internal/members/by-openid/{SHOP}/o%3Cscript%3E/points",
    ],
)
async def test_points_by_a_malformed_appid_or_openid_are_refused(commerce: Commerce, path: str) -> None:
    assert (await commerce.api.get(path)).status_code == 422


async def test_points_by_openid_need_the_internal_token(commerce: Commerce) -> None:
    r = await commerce.api.get(f"/internal/members/by-openid/{SHOP}/oX/points", headers={"X-Siyu-Internal-Token": "no"})
    assert r.status_code in (401, 403)


async def ask(c: Commerce, member: str, order_id: str) -> tuple[int, dict[str, object]]:
    r = await c.api.post(f"/internal/members/{member}/coupons", json={"kind": "abandoned_order", "order_id": order_id})
    return r.status_code, r.json()


async def test_an_abandoned_order_coupon_is_issued_once_per_order_and_once_per_period(commerce: Commerce) -> None:
    c = commerce
    member = str(uuid.uuid4())
    status, first = await ask(c, member, "3700000000000000001")
    assert status == 201 and first["coupon_id"] and first["title"], first
    # The reminder asked again (its retry): the same coupon, nothing new.
    again_status, again = await ask(c, member, "3700000000000000001")
    assert again_status == 200 and again == first
    # Another order in the same period: the claim limit holds, the reminder goes without a coupon.
    other_status, other = await ask(c, member, "3700000000000000002")
    assert other_status == 200 and other["coupon_id"] is None and "claim limit" in str(other["reason"])
    assert await c.val("SELECT count(*) FROM coupons WHERE member_id = $1", member) == 1
    assert len(await c.published("commerce.coupon.issued")) == 1
    mine = (await c.api.get(f"/internal/members/{member}/coupons")).json()
    assert [m["coupon_id"] for m in mine] == [first["coupon_id"]]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "welcome", "order_id": "1"},
        {"kind": "abandoned_order"},
        {"kind": "abandoned_order", "order_id": "x" * 33},
        {"kind": "abandoned_order", "order_id": "1; DROP TABLE coupons"},
        [],
    ],
)
async def test_a_malformed_coupon_ask_is_refused_and_writes_nothing(commerce: Commerce, body: object) -> None:
    c = commerce
    member = str(uuid.uuid4())
    r = await c.api.post(f"/internal/members/{member}/coupons", json=body)
    assert r.status_code == 422
    assert await c.val("SELECT count(*) FROM coupons") == 0


async def test_a_coupon_ask_without_the_internal_token_is_refused_and_writes_nothing(commerce: Commerce) -> None:
    c = commerce
    r = await c.api.post(
        f"/internal/members/{uuid.uuid4()}/coupons",
        json={"kind": "abandoned_order", "order_id": "3700000000000000003"},
        headers={"X-Siyu-Internal-Token": "no"},
    )
    assert r.status_code in (401, 403)
    assert await c.val("SELECT count(*) FROM coupons") == 0
