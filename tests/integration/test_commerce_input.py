"""Malformed, hostile, unsigned and replayed input to every commerce route and consumer: a clear 4xx
(or a dead-letter for a consumer) and nothing written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.commerce.points.service import PointsService
from shared.bus.consumer import PoisonMessage
from shared.events import MemberMerged, MemberRegistered, WeChatPushReceived
from shared.events.envelope import Envelope
from shared.http import INTERNAL_TOKEN_HEADER
from tests.integration import commerce_fixtures
from tests.integration.commerce_fixtures import SHOP, Commerce
from tests.integration.test_commerce_orders import sku

pytestmark = pytest.mark.integration
commerce = commerce_fixtures.commerce

TABLES = (
    "orders",
    "order_status_history",
    "order_milestones",
    "aftersales",
    "gifts",
    "points_entries",
    "points_lots",
    "points_accounts",
    "redemptions",
    "coupons",
    "checkins",
    "affiliate_attributions",
    "outbox",
    "inbox",
)


async def counts(c: Commerce) -> dict[str, int]:
    return {t: int(await c.val(f'SELECT count(*) FROM "{t}"')) for t in TABLES}


# Fixed, not random: it is in parametrized test ids, which every xdist worker must collect alike.
MEMBER = "1653f557-899d-46a4-adf1-8607504266b3"
ROUTES: list[tuple[str, str]] = [
    ("GET", f"/internal/members/{MEMBER}/points"),
    ("GET", f"/internal/members/{MEMBER}/points/ledger"),
    ("GET", f"/internal/members/{MEMBER}/orders"),
    ("GET", f"/internal/members/{MEMBER}/coupons"),
    ("GET", f"/internal/members/{MEMBER}/gifts"),
    ("POST", f"/internal/members/{MEMBER}/checkins"),
    ("POST", f"/internal/members/{MEMBER}/rewards/rw-coupon-10/redemptions"),
    ("GET", "/internal/rewards"),
    ("POST", "/internal/admin/rewards"),
    ("POST", "/internal/admin/points-campaigns"),
    ("GET", f"/internal/admin/members/{MEMBER}"),
    ("GET", "/internal/admin/orders/123"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_refuses_a_caller_without_the_internal_token(
    commerce: Commerce, method: str, path: str
) -> None:
    c = commerce
    before = await counts(c)
    for headers in ({INTERNAL_TOKEN_HEADER: ""}, {INTERNAL_TOKEN_HEADER: "guess-guess-guess-guess"}):
        r = await c.api.request(method, path, headers=headers | {"Idempotency-Key": "k"}, json={})
        assert r.status_code == 401, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert await counts(c) == before


@pytest.mark.parametrize(
    "member",
    ["1", "not-a-uuid", "../../etc/passwd", "' OR 1=1 --", "00000000-0000-4000-8000-00000000000Z", "x" * 500],
)
async def test_a_malformed_member_id_is_422_on_every_member_route(commerce: Commerce, member: str) -> None:
    c = commerce
    before = await counts(c)
    for method, path in ROUTES:
        if MEMBER not in path:
            continue
        r = await c.api.request(method, path.replace(MEMBER, member), headers={"Idempotency-Key": "k"})
        assert r.status_code in (404, 422), (path, r.status_code)
    assert await counts(c) == before


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"cursor": "9" * 25},
        {"cursor": "99999999999999999999"},
        {"limit": 0},
        {"limit": 10_000},
    ],
)
async def test_a_bad_ledger_cursor_or_limit_is_422(commerce: Commerce, params: dict[str, Any]) -> None:
    r = await commerce.api.get(f"/internal/members/{MEMBER}/points/ledger", params=params)
    assert r.status_code == 422, r.text


async def test_redemptions_need_a_sane_idempotency_key_and_a_known_reward(commerce: Commerce) -> None:
    c = commerce
    async with c.deps.db.unit_of_work() as uow:
        await PointsService(uow, c.deps.settings, c.clock()).earn_available(MEMBER, 500, rule="adjust", idem_key="seed")
    before = await counts(c)
    path = f"/internal/members/{MEMBER}/rewards/rw-coupon-10/redemptions"
    r = await c.api.post(path)
    assert r.status_code == 400 and r.json()["type"].endswith("/idempotency-key-required")
    for key in ("   ", "k" * 256, "a\tb"):
        assert (await c.api.post(path, headers={"Idempotency-Key": key})).status_code in (400, 422), key
    for reward in ("RW-UPPER", "x", "a" * 100, "rw;drop"):
        r = await c.api.post(
            f"/internal/members/{MEMBER}/rewards/{reward}/redemptions", headers={"Idempotency-Key": "k"}
        )
        assert r.status_code in (404, 422), reward
    r = await c.api.post(
        f"/internal/members/{MEMBER}/rewards/rw-nonexistent/redemptions", headers={"Idempotency-Key": "k"}
    )
    assert r.status_code == 404 and r.json()["type"].endswith("/reward-not-found")
    assert await counts(c) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reward_id": "rw-x1", "title": "t", "kind": "coupon", "cost_points": 10, "stock": 5},  # no coupon spec
        {"reward_id": "rw-x2", "title": "t", "kind": "product", "cost_points": 0, "stock": 5},
        {"reward_id": "rw-x3", "title": "t", "kind": "product", "cost_points": 10, "stock": -1},
        {"reward_id": "rw-x4", "title": "t", "kind": "gold", "cost_points": 10, "stock": 1},
        {"reward_id": "rw-x5", "title": "", "kind": "product", "cost_points": 10, "stock": 1},
        {"reward_id": "rw-x6", "title": "t", "kind": "product", "cost_points": 10, "stock": 1, "admin": True},
        {"reward_id": "rw-x7", "title": "t" * 61, "kind": "product", "cost_points": 10, "stock": 1},
    ],
)
async def test_a_bad_reward_is_422_and_writes_nothing(commerce: Commerce, body: dict[str, Any]) -> None:
    before = await commerce.val("SELECT count(*) FROM rewards")
    r = await commerce.api.post("/internal/admin/rewards", json=body)
    assert r.status_code == 422, r.text
    assert await commerce.val("SELECT count(*) FROM rewards") == before


async def test_a_bad_campaign_is_422(commerce: Commerce) -> None:
    base = {"campaign_id": "c-1", "name": "n", "bonus_pct": 50}
    for body in (
        base | {"starts_at": "2026-02-01T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"},
        base | {"starts_at": "yesterday", "ends_at": "2026-01-01T00:00:00Z"},
        base | {"bonus_pct": 0, "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-02-01T00:00:00Z"},
    ):
        assert (await commerce.api.post("/internal/admin/points-campaigns", json=body)).status_code == 422
    assert await commerce.val("SELECT count(*) FROM points_campaigns") == 0


def push(event: str, body: dict[str, Any], *, appid: str = SHOP, openid: str = "oShopUser") -> Envelope:
    payload = {
        "ToUserName": "gh_shop",
        "FromUserName": openid,
        "CreateTime": 1_760_000_000,
        "MsgType": "event",
        "Event": event,
    }
    data = WeChatPushReceived(
        appid=appid,
        app_kind="shop",
        name=event,
        openid=openid,
        create_time=1_760_000_000,
        dedup_key=f"shop:{uuid.uuid4()}",
        push_id=1,
        payload=payload | body,
    )
    return Envelope.wrap(data, producer="gateway", event_type=f"wechat.shop.{event}")


@pytest.mark.parametrize(
    "envelope",
    [
        push("channels_ec_order_pay", {}),  # no order_info
        push("channels_ec_order_pay", {"order_info": {"order_id": "not-digits"}}),
        push("channels_ec_order_pay", {"order_info": "3705115058471208928"}),
        push("channels_ec_order_pay", {"order_info": {"order_id": "9" * 40}}),
        push("channels_ec_order_pay", {"order_info": {"order_id": "3705115058471208928"}}),  # not in the shop
        push("channels_ec_order_pay", {"order_info": {"order_id": "1"}}, appid="wx0000000000000001"),  # not a shop app
        push("channels_ec_aftersale_update", {"finder_shop_aftersale_status_update": {"after_sale_order_id": "1"}}),
        push("channels_ec_user_coupon_use", {"user_info": {"coupon_id": "x"}}),
    ],
)
async def test_a_malformed_or_forged_push_is_dead_lettered_and_writes_nothing(
    commerce: Commerce, envelope: Envelope
) -> None:
    c = commerce
    before = await counts(c)
    with pytest.raises(PoisonMessage):
        await c.deliver(envelope)
    assert await counts(c) == before


async def test_an_envelope_that_is_not_one_is_poison(commerce: Commerce) -> None:
    with pytest.raises(PoisonMessage):
        await commerce.consumer.handle(b'{"event_id": "x"}')
    with pytest.raises(PoisonMessage):
        await commerce.consumer.handle(b"\xff\xfe not json")
    data = MemberMerged(survivor_id="a", merged_id="b", reason="r").model_dump() | {"survivor_id": None}
    bad = Envelope.wrap(MemberMerged(survivor_id="a", merged_id="b", reason="r"), producer="identity")
    with pytest.raises(PoisonMessage):
        await commerce.consumer.handle(bad.model_copy(update={"data": data}).model_dump_json().encode())


async def test_a_replayed_envelope_is_a_duplicate(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    order_id = await c.sandbox.order(user, await sku(c))
    await c.sandbox.act(order_id, "pay")
    envelopes = await c.deliver_pushes()
    after = await counts(c)
    for envelope in envelopes:
        assert await c.deliver(envelope) == "duplicate"
    assert await counts(c) == after


async def test_a_merge_of_a_member_into_itself_changes_nothing(commerce: Commerce) -> None:
    c = commerce
    before = await counts(c)
    assert await c.merge(MEMBER, MEMBER) == "handled"
    after = await counts(c)
    assert {k: v for k, v in after.items() if k != "inbox"} == {k: v for k, v in before.items() if k != "inbox"}


async def test_a_new_member_gets_the_welcome_coupon_once(commerce: Commerce) -> None:
    c = commerce
    member = str(uuid.uuid4())
    for _ in range(2):  # identity publishes it again (a new event id): one coupon
        event = MemberRegistered(
            member_id=member, appid="wx0000000000000002", app_kind="mini_program", openid="o1", source="mp_login"
        )
        assert await c.deliver(Envelope.wrap(event, producer="identity")) == "handled"
    coupons = (await c.api.get(f"/internal/members/{member}/coupons")).json()
    assert [x["title"] for x in coupons] == [c.deps.settings.welcome_coupon.title]


async def test_a_coupon_used_in_the_shop_is_recorded_once(commerce: Commerce) -> None:
    c = commerce
    user = await c.sandbox.user()
    order_id = await c.sandbox.order(user, await sku(c))
    await c.deliver_pushes()  # identity now knows the buyer
    member = await c.member_of(user)
    from services.commerce.coupons.service import CouponService

    async with c.deps.db.unit_of_work() as uow:
        await CouponService(uow, c.deps.settings, c.clock()).issue(
            member,
            kind="reward",
            title="券",
            discount_fen=100,
            min_spend_fen=0,
            validity_days=7,
            claim_key="test:1",
            shop_coupon_id="777",
        )
    body = {"user_info": {"coupon_id": "777", "user_coupon_id": "9001", "use_time": 1_760_000_000}}
    for _ in range(2):
        await c.deliver(push("channels_ec_user_coupon_use", body, openid=user["openids"][SHOP]))
    coupons = (await c.api.get(f"/internal/members/{member}/coupons")).json()
    assert [x["state"] for x in coupons] == ["used"]
    assert len(await c.published("commerce.coupon.used")) == 1
    await c.deliver(push("channels_ec_user_coupon_unuse", body, openid=user["openids"][SHOP]))
    assert [x["state"] for x in (await c.api.get(f"/internal/members/{member}/coupons")).json()] == ["available"]
    assert order_id
