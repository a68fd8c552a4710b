"""The gateway's commerce and notify routes (``/api/v1``) and the operator API (``/admin/v1``),
against the real identity, commerce and notify and the WeChat sandbox (gateway_routes_fixtures.py).

Each test signs in its own sandbox users: a member earns points by buying in the (sandbox) shop,
whose pushes reach commerce through the gateway's callback endpoint and the broker, and sees them
through the gateway. Nothing of Siyu's own is faked.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import pytest

from services.gateway.app import create_app as create_gateway
from services.gateway.sessions.service import SessionTokens
from shared.bus import ops
from shared.bus.topology import Topology, amqp_message
from shared.events import MemberRegistered
from shared.events.envelope import Envelope
from shared.settings import DEV_SESSION_SECRET
from tests.conftest import AMQP, NAMESPACE
from tests.integration import gateway_routes_fixtures
from tests.integration.gateway_routes_fixtures import (
    ADMIN,
    BODY_CAP,
    MP,
    SHOP,
    WRITES_PER_MINUTE,
    Member,
    Siyu,
    gateway_settings,
    sql,
)
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

siyu = gateway_routes_fixtures.siyu
api = gateway_routes_fixtures.api

ORDER_PAID_TEMPLATE = "订单支付成功通知"


def problem_type(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/problem+json", r.text
    return str(r.json()["type"]).rsplit("/", 1)[-1]


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def ledger(api: httpx.AsyncClient, member: Member) -> list[dict[str, Any]]:
    r = await api.get("/api/v1/me/points/ledger", headers=member.auth)
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()["entries"]
    return entries


async def remaining(api: httpx.AsyncClient, member: Member, reward_id: str) -> int:
    r = await api.get("/api/v1/rewards", headers=member.auth)
    assert r.status_code == 200, r.text
    return int(next(x["remaining"] for x in r.json() if x["reward_id"] == reward_id))


async def template_id(siyu: Siyu, title: str) -> str:
    templates = await siyu.sandbox_get(f"/sandbox/templates?appid={MP}")
    return str(next(t["template_id"] for t in templates if t["title"] == title and t["kind"] == "subscribe_once"))


async def authorise(siyu: Siyu, api: httpx.AsyncClient, member: Member, template: str) -> None:
    """The member accepts a subscribe popup: WeChat pushes it (through the gateway) and the
    mini-program reports the same answer (POST /api/v1/subscriptions); notify counts it once."""
    await siyu.sandbox_post(
        f"/sandbox/users/{member.user['user_id']}/subscribe-popup", {"appid": MP, "results": {template: "accept"}}
    )
    r = await api.post("/api/v1/subscriptions", json={"results": {template: "accept"}}, headers=member.auth)
    assert r.status_code == 204, r.text
    assert r.content == b""
    openid = member.user["openids"][MP]

    async def both_sources_recorded() -> list[Any]:
        return await sql(
            "notify",
            "SELECT source FROM authorisation_grants WHERE appid = $1 AND openid = $2 AND template_id = $3",
            MP,
            openid,
            template,
        )

    sources = await eventually(lambda: _at_least(both_sources_recorded, 2))
    assert sorted(r["source"] for r in sources) == ["miniprogram", "push"]
    [row] = await sql(
        "notify",
        "SELECT remaining FROM authorisations WHERE appid = $1 AND openid = $2 AND template_id = $3",
        MP,
        openid,
        template,
    )
    assert row["remaining"] == 1, "the mini-program's report and WeChat's push are one acceptance"


async def _at_least(check: Any, n: int) -> list[Any] | None:
    rows: list[Any] = await check()
    return rows if len(rows) >= n else None


async def inbox(siyu: Siyu, member: Member) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await siyu.sandbox_get(f"/sandbox/users/{member.user['user_id']}/inbox")
    return entries


# ---------------------------------------------------------------------------------------------
# points: /me, the ledger, orders


async def test_a_new_member_earns_points_from_a_shop_order_and_sees_them_in_me_the_ledger_and_orders(
    siyu: Siyu, api: httpx.AsyncClient
) -> None:
    member = await siyu.member(api)

    me = (await api.get("/api/v1/me", headers=member.auth)).json()
    assert me["member_id"] == member.member_id
    assert me["tier"] == "base", "a new member sits at the base tier"
    assert me["points"] == {"available": 0, "pending": 0, "expiring": []}
    assert {a["appid"] for a in me["linked_apps"]} == {MP}

    order = await siyu.order(member, 12800)
    order_id = order["order_id"]
    assert isinstance(order_id, str) and len(order_id) == 19
    await siyu.act(order_id, "pay")

    async def pending() -> bool:
        return bool((await siyu.commerce_view(member))["points"]["pending"])

    await eventually(pending)
    # The base tier earns exactly order_price // 100 * SIYU_POINTS_PER_YUAN, pending from payment.
    assert await siyu.points(api, member) == {"available": 0, "pending": 128, "expiring": []}
    [earn] = await ledger(api, member)
    assert earn["kind"] == "earn" and earn["points"] == 128 and earn["state"] == "pending"
    assert earn["order_id"] == order_id and isinstance(earn["entry_id"], str)
    assert set(earn) == {"entry_id", "kind", "points", "state", "order_id", "created_at"}

    await siyu.act(order_id, "ship", "confirm", "settle")

    async def available() -> bool:
        return bool((await siyu.commerce_view(member))["points"]["available"] == 128)

    await eventually(available)
    points = await siyu.points(api, member)
    assert points["available"] == 128 and points["pending"] == 0
    [earn] = await ledger(api, member)
    assert earn["state"] == "available" and earn["points"] == 128

    r = await api.get("/api/v1/me/orders", headers=member.auth)
    assert r.status_code == 200
    assert r.json() == [{"order_id": order_id, "status": 100, "paid_fen": 12800, "is_gift": False, "points": 128}]
    # The shop's identity of this person joined the member (UnionID), so /me names the shop too.
    me = (await api.get("/api/v1/me", headers=member.auth)).json()
    assert {a["appid"] for a in me["linked_apps"]} == {MP, SHOP}


class _Away(httpx.AsyncBaseTransport):
    """An upstream that is down (refuses connections) or hangs (answers after the caller gave up)."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.hang:
            await asyncio.Event().wait()  # until the caller gives up on it
        raise httpx.ConnectError("connection refused")


@pytest.mark.parametrize("hang", [True, False], ids=["commerce hangs", "commerce down"])
async def test_me_still_answers_identitys_part_when_commerce_cannot(
    siyu: Siyu, api: httpx.AsyncClient, hang: bool
) -> None:
    member = await siyu.member(api)
    asgi = {name: httpx.ASGITransport(app=app) for name, app in siyu.apps.items()}
    settings = gateway_settings(GATEWAY_ME_POINTS_BUDGET_SECONDS=0.3)
    second = create_gateway(settings, upstream_transports={**asgi, "commerce": _Away(hang)})
    async with second.router.lifespan_context(second):
        transport = httpx.ASGITransport(app=second, client=("198.51.100.99", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as replica:
            r = await replica.get("/api/v1/me", headers=member.auth)
            assert r.status_code == 200, r.text
            me = r.json()
            assert me["member_id"] == member.member_id and me["linked_apps"] == [{"appid": MP, "kind": "mini_program"}]
            assert me["tier"] is None and me["points"] is None
            # A route that is commerce's alone cannot answer: 503 with Retry-After, never a guess.
            if not hang:
                r = await replica.get("/api/v1/me/points/ledger", headers=member.auth)
                assert r.status_code == 503 and problem_type(r) == "dependency-unavailable"
                assert r.headers["Retry-After"].isdigit()
    # Through the gateway whose commerce is up, the same member has both parts.
    assert (await api.get("/api/v1/me", headers=member.auth)).json()["tier"] == "base"


async def test_the_ledger_pages_newest_first_with_its_cursor(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    await siyu.check_in(api, member)
    order_id = str((await siyu.order(member, 3900))["order_id"])
    await siyu.act(order_id, "pay")

    async def two_entries() -> bool:
        return len((await siyu.commerce_view(member, "points/ledger"))["entries"]) == 2

    await eventually(two_entries)
    newest, oldest = await ledger(api, member)
    assert (newest["kind"], newest["points"], newest["order_id"]) == ("earn", 39, order_id)
    assert (oldest["kind"], oldest["points"], oldest["state"]) == ("checkin", 5, "available")
    assert "order_id" not in oldest, "an optional field commerce leaves out stays out"

    # The cursor of a page leads to the entries after it (commerce pages 20 at a time).
    cursor = newest["entry_id"]
    r = await api.get("/api/v1/me/points/ledger", params={"cursor": cursor}, headers=member.auth)
    assert r.status_code == 200
    assert [e["entry_id"] for e in r.json()["entries"]] == [oldest["entry_id"]]
    assert r.json()["next_cursor"] is None


# ---------------------------------------------------------------------------------------------
# the points mall


async def test_redeeming_needs_an_idempotency_key_and_a_retry_spends_once(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    await siyu.earn(api, member, 12800)
    reward_id = await siyu.reward(cost=100, stock=50)
    assert await remaining(api, member, reward_id) == 50

    # Without the key: 400, nothing spent.
    r = await api.post(f"/api/v1/rewards/{reward_id}/redemptions", headers=member.auth)
    assert r.status_code == 400 and problem_type(r) == "idempotency-key-required"
    assert (await siyu.points(api, member))["available"] == 128

    headers = {**member.auth, **key()}
    first = await api.post(f"/api/v1/rewards/{reward_id}/redemptions", headers=headers)
    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body) == {"redemption_id", "points_spent", "coupon"}
    assert body["points_spent"] == 100
    assert set(body["coupon"]) == {"coupon_id", "title", "expires_at"}

    # The same key again: the gateway replays the first answer.
    again = await api.post(f"/api/v1/rewards/{reward_id}/redemptions", headers=headers)
    assert again.status_code == 201 and again.json() == body
    assert again.headers["Idempotent-Replayed"] == "true"

    # The same key reaching commerce anyway (the gateway's record gone: another replica, its
    # horizon passed): commerce answers the same redemption; nothing is spent twice.
    await sql("gateway", "DELETE FROM idempotency_keys WHERE scope = $1", f"member:{member.member_id}")
    late = await api.post(f"/api/v1/rewards/{reward_id}/redemptions", headers=headers)
    assert late.status_code == 201 and "Idempotent-Replayed" not in late.headers
    assert late.json()["redemption_id"] == body["redemption_id"]

    assert await siyu.points(api, member) == {"available": 28, "pending": 0, "expiring": []}
    assert await remaining(api, member, reward_id) == 49
    redeem = (await ledger(api, member))[0]
    assert (redeem["kind"], redeem["points"], redeem["state"]) == ("redeem", -100, "spent")
    assert "order_id" not in redeem
    coupons = (await api.get("/api/v1/me/coupons", headers=member.auth)).json()
    [coupon] = [c for c in coupons if c["coupon_id"] == body["coupon"]["coupon_id"]]
    assert set(coupon) == {"coupon_id", "title", "state", "expires_at"} and coupon["state"] == "available"

    # The key for another reward is another request: 422.
    other = await siyu.reward(cost=1, stock=5)
    r = await api.post(f"/api/v1/rewards/{other}/redemptions", headers=headers)
    assert r.status_code == 422 and problem_type(r) == "idempotency-key-reused"


async def test_concurrent_redemptions_on_one_balance_spend_it_once(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    await siyu.earn(api, member, 12800)
    reward_id = await siyu.reward(cost=100, stock=50)

    answers = await asyncio.gather(
        *(api.post(f"/api/v1/rewards/{reward_id}/redemptions", headers={**member.auth, **key()}) for _ in range(3))
    )

    assert sorted(a.status_code for a in answers) == [201, 409, 409], [a.text for a in answers]
    refused = [a for a in answers if a.status_code == 409]
    assert {problem_type(a) for a in refused} == {"insufficient-points"}
    assert (await siyu.points(api, member))["available"] == 28
    assert await remaining(api, member, reward_id) == 49, "a refused redemption takes no stock"


async def test_a_reward_out_of_stock_is_409_sold_out_and_spends_nothing(siyu: Siyu, api: httpx.AsyncClient) -> None:
    first, second = await siyu.member(api), await siyu.member(api)
    reward_id = await siyu.reward(cost=5, stock=1)
    for member in (first, second):
        await siyu.check_in(api, member)

    r = await api.post(f"/api/v1/rewards/{reward_id}/redemptions", headers={**first.auth, **key()})
    assert r.status_code == 201, r.text
    r = await api.post(f"/api/v1/rewards/{reward_id}/redemptions", headers={**second.auth, **key()})
    assert r.status_code == 409 and problem_type(r) == "sold-out"
    assert (await siyu.points(api, second))["available"] == 5
    assert await remaining(api, second, reward_id) == 0

    r = await api.post("/api/v1/rewards/rw-no-such-reward/redemptions", headers={**second.auth, **key()})
    assert r.status_code == 404 and problem_type(r) == "reward-not-found"


async def test_the_points_mall_lists_its_rewards(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    reward_id = await siyu.reward(cost=300, stock=7, kind="product")
    r = await api.get("/api/v1/rewards", headers=member.auth)
    assert r.status_code == 200
    [item] = [x for x in r.json() if x["reward_id"] == reward_id]
    assert item == {"reward_id": reward_id, "title": "满50减10", "cost_points": 300, "kind": "product", "remaining": 7}


# ---------------------------------------------------------------------------------------------
# check-ins and gifts


async def test_checking_in_twice_a_day_is_201_then_409(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    r = await api.post("/api/v1/checkins", headers=member.auth)
    assert r.status_code == 201 and r.json() == {"points": 5, "streak": 1}
    r = await api.post("/api/v1/checkins", headers=member.auth)
    assert r.status_code == 409 and problem_type(r) == "already-checked-in"
    assert (await siyu.points(api, member))["available"] == 5

    # With an Idempotency-Key, a retry of the first check-in gets its 201 again.
    other = await siyu.member(api)
    headers = {**other.auth, **key()}
    first = await api.post("/api/v1/checkins", headers=headers)
    again = await api.post("/api/v1/checkins", headers=headers)
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await siyu.points(api, other))["available"] == 5


async def test_gifts_show_each_side_its_role_and_never_the_other_sides_address(
    siyu: Siyu, api: httpx.AsyncClient
) -> None:
    giver, recipient = await siyu.member(api), await siyu.member(api)
    gift = await siyu.order(giver, 9900, gift=True)
    order_id, present_order_id = gift["order_id"], gift["present_order_id"]
    await siyu.act(order_id, "pay")
    await siyu.sandbox_post(f"/sandbox/shop/gifts/{present_order_id}/accept", {"user_id": recipient.user["user_id"]})

    async def accepted(member: Member) -> bool:
        gifts = await siyu.commerce_view(member, "gifts")
        return bool(gifts and gifts[0]["state"] == "accepted")

    await eventually(lambda: accepted(giver))
    await eventually(lambda: accepted(recipient))
    [given] = (await api.get("/api/v1/gifts", headers=giver.auth)).json()
    [received] = (await api.get("/api/v1/gifts", headers=recipient.auth)).json()
    assert given == {
        "order_id": order_id,
        "present_order_id": present_order_id,
        "role": "giver",
        "state": "accepted",
        "points": given["points"],
    }
    assert isinstance(given["points"], int)
    assert received["role"] == "recipient" and received["order_id"] == order_id and received["points"] == 0
    for member in (giver, recipient):
        text = (await api.get("/api/v1/gifts", headers=member.auth)).text
        assert "address" not in text and "phone" not in text and "openid" not in text
    orders = (await api.get("/api/v1/me/orders", headers=giver.auth)).json()
    assert [(o["order_id"], o["is_gift"]) for o in orders] == [(order_id, True)]


# ---------------------------------------------------------------------------------------------
# notify: subscriptions and opens


async def test_subscriptions_are_recorded_and_the_opened_message_is_attributed(
    siyu: Siyu, api: httpx.AsyncClient
) -> None:
    member, other = await siyu.member(api), await siyu.member(api)
    template = await template_id(siyu, ORDER_PAID_TEMPLATE)
    await authorise(siyu, api, member, template)

    # An order paid: notify sends the order message by the mini-program's subscribe message (the
    # authorisation just recorded), whose jump names the order and the send.
    order_id = str((await siyu.order(member, 3900))["order_id"])
    await siyu.act(order_id, "pay")

    async def delivered() -> list[dict[str, Any]]:
        return [m for m in await inbox(siyu, member) if m["kind"] == "subscribe" and m["template_id"] == template]

    [message] = await eventually(delivered)
    page = message["jump"]["miniprogram"]["pagepath"]
    assert f"order_id={order_id}" in page and "siyu_send=" in page

    async def recorded() -> bool:
        # The sandbox's inbox has the message as soon as WeChat takes it; notify records WeChat's
        # answer a moment later (a member opens a message seconds later, not microseconds).
        r = await api.get(f"/admin/v1/members/{member.member_id}/messages", headers=ADMIN)
        return any(m["rule"] == "order_paid" and m["status"] == "sent" for m in r.json())

    await eventually(recorded, what="notify to record WeChat's answer to the send")

    # Another member reporting this page opens nothing (the send is not theirs).
    r = await api.post("/api/v1/opens", json={"page": page}, headers=other.auth)
    assert r.status_code == 200 and r.json()["attributed"] is False and r.json()["send_id"] is None

    r = await api.post("/api/v1/opens", json={"page": page}, headers=member.auth)
    assert r.status_code == 200, r.text
    opened = r.json()
    assert opened["attributed"] is True and opened["rule"] == "order_paid" and opened["send_id"]
    again = await api.post("/api/v1/opens", json={"page": page}, headers=member.auth)
    assert again.json()["attributed"] is True, "reporting an open twice counts it once, and says so"

    # The operator's send log shows it: channel, status, the open.
    r = await api.get(f"/admin/v1/members/{member.member_id}/messages", headers=ADMIN)
    assert r.status_code == 200
    [sent] = [m for m in r.json() if m["send_id"] == opened["send_id"]]
    assert sent["rule"] == "order_paid" and sent["channel"] == "mp_subscribe" and sent["status"] == "sent"
    assert sent["opened_at"] is not None and sent["order_id"] is None and sent["campaign_id"] is None


async def test_a_page_no_message_opened_is_not_attributed(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    for page in ("pages/index/index", "pages/order/detail?order_id=1&siyu_send=999999999", "pages/a?siyu_send=x"):
        r = await api.post("/api/v1/opens", json={"page": page}, headers=member.auth)
        assert r.status_code == 200 and r.json()["attributed"] is False, page


async def test_subscriptions_reach_notify_before_it_has_learned_the_member(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    openid = member.user["openids"][MP]

    async def known() -> list[Any]:
        return await sql("notify", "SELECT 1 FROM member_apps WHERE member_id = $1", member.member_id)

    await eventually(known)
    # As if identity's event had not reached notify yet: notify knows no openid for the member.
    await sql("notify", "DELETE FROM member_apps WHERE member_id = $1", member.member_id)
    template = await template_id(siyu, ORDER_PAID_TEMPLATE)

    r = await api.post("/api/v1/subscriptions", json={"results": {template: "accept"}}, headers=member.auth)

    assert r.status_code == 204, r.text
    rows = await sql("notify", "SELECT appid, openid, remaining FROM authorisations WHERE template_id = $1", template)
    assert (MP, openid, 1) in [(x["appid"], x["openid"], x["remaining"]) for x in rows]


# ---------------------------------------------------------------------------------------------
# who may see what


async def test_a_member_sees_only_their_own_data_and_ids_in_paths_are_never_member_ids(
    siyu: Siyu, api: httpx.AsyncClient
) -> None:
    owner, intruder = await siyu.member(api), await siyu.member(api)
    order_id = await siyu.earn(api, owner, 6800)
    await siyu.check_in(api, owner)

    # The intruder asks for the owner's data every way a request can name a member.
    for path in ("/api/v1/me/orders", "/api/v1/me/points/ledger", "/api/v1/me/coupons", "/api/v1/gifts"):
        r = await api.get(path, params={"member_id": owner.member_id}, headers=intruder.auth)
        assert r.status_code == 200, (path, r.text)
        assert order_id not in r.text and owner.member_id not in r.text, path
    me = (await api.get("/api/v1/me", headers={**intruder.auth, "X-Member-Id": owner.member_id})).json()
    assert me["member_id"] == intruder.member_id and me["points"]["available"] == 0

    # An id in a path is a reward's, never a member's: the owner's id there is just no reward.
    r = await api.post(f"/api/v1/rewards/{owner.member_id}/redemptions", headers={**intruder.auth, **key()})
    assert r.status_code == 404 and problem_type(r) == "reward-not-found"
    # Bodies cannot name a member (or an openid) either.
    r = await api.post(
        "/api/v1/opens", json={"page": "pages/index/index", "member_id": owner.member_id}, headers=intruder.auth
    )
    assert r.status_code == 422
    r = await api.post(
        "/api/v1/subscriptions", json={"results": {"t1": "accept"}, "openid": "o-owner"}, headers=intruder.auth
    )
    assert r.status_code == 422

    assert (await siyu.points(api, owner))["available"] == 68 + 5
    assert len(await ledger(api, owner)) == 2


def _routes(reward: str = "rw-coupon-10") -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/api/v1/me", None),
        ("GET", "/api/v1/me/points/ledger", None),
        ("GET", "/api/v1/me/orders", None),
        ("GET", "/api/v1/rewards", None),
        ("POST", f"/api/v1/rewards/{reward}/redemptions", None),
        ("GET", "/api/v1/me/coupons", None),
        ("POST", "/api/v1/checkins", None),
        ("POST", "/api/v1/subscriptions", {"results": {"t1": "accept"}}),
        ("GET", "/api/v1/gifts", None),
        ("POST", "/api/v1/opens", {"page": "pages/index/index"}),
    ]


async def _writes() -> dict[str, int]:
    counts = {t: len(await sql("commerce", f"SELECT 1 FROM {t}")) for t in ("checkins", "redemptions")}
    counts["grants"] = len(await sql("notify", "SELECT 1 FROM authorisation_grants"))
    return counts


async def test_every_route_needs_a_valid_session_and_an_invalid_one_writes_nothing(
    siyu: Siyu, api: httpx.AsyncClient
) -> None:
    member = await siyu.member(api)
    expired = SessionTokens(DEV_SESSION_SECRET, ttl=600).issue(
        uuid.UUID(member.member_id), MP, now=datetime.now(UTC) - timedelta(hours=1)
    )
    before = await _writes()
    for method, path, body in _routes():
        headers = {**key()}
        r = await api.request(method, path, json=body, headers=headers)
        assert r.status_code == 401 and problem_type(r) == "session-required", (path, r.text)
        for token, slug in ((expired.token, "invalid-session"), ("not-a-token", "invalid-session")):
            r = await api.request(method, path, json=body, headers={**headers, "Authorization": f"Bearer {token}"})
            assert r.status_code == 401 and problem_type(r) == slug, (path, r.text)
            assert "sign in again" in r.json()["detail"] or token == "not-a-token"
        # The operator's token is not a member's session.
        r = await api.request(method, path, json=body, headers={**headers, **ADMIN})
        assert r.status_code == 401, path
    assert await _writes() == before


async def test_writes_have_their_own_rate_limit(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    for _ in range(WRITES_PER_MINUTE):
        r = await api.post("/api/v1/opens", json={"page": "pages/index/index"}, headers=member.auth)
        assert r.status_code == 200, r.text
    r = await api.post("/api/v1/checkins", headers=member.auth)
    assert r.status_code == 429 and problem_type(r) == "rate-limited"
    assert int(r.headers["Retry-After"]) >= 1 and r.json()["limit"] == "writes"
    # Reads are still within the member's budget, and the refused check-in wrote nothing.
    r = await api.get("/api/v1/me", headers=member.auth)
    assert r.status_code == 200 and r.json()["points"]["available"] == 0


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/api/v1/subscriptions", b'{"results": {"t1": "accept"', "application/json"),
        ("/api/v1/subscriptions", b'{"results": {}}', "application/json"),
        ("/api/v1/subscriptions", b'{"results": {"t1": "maybe"}}', "application/json"),
        ("/api/v1/subscriptions", b'{"results": {"a b": "accept"}}', "application/json"),
        ("/api/v1/subscriptions", json.dumps({"results": {f"t{i}": "accept" for i in range(4)}}).encode(), None),
        ("/api/v1/subscriptions", b'{"results": {"t1": "accept"}, "appid": "wx0000000000000002"}', None),
        ("/api/v1/subscriptions", b"results=accept", "application/x-www-form-urlencoded"),
        ("/api/v1/opens", b'{"page": ""}', "application/json"),
        ("/api/v1/opens", b'{"page": "pages/a b"}', "application/json"),
        ("/api/v1/opens", b'{"page": "pages/a\\nb"}', "application/json"),
        ("/api/v1/opens", json.dumps({"page": "p" * 1025}).encode(), "application/json"),
        ("/api/v1/opens", b"[]", "application/json"),
    ],
)
async def test_malformed_bodies_are_422_and_reach_no_one(
    siyu: Siyu, api: httpx.AsyncClient, path: str, body: bytes, content_type: str | None
) -> None:
    member = await siyu.member(api)
    before = await _writes()
    headers = {**member.auth, **({"content-type": content_type} if content_type else {})}
    r = await api.post(path, content=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert await _writes() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/subscriptions"),
        ("POST", "/api/v1/opens"),
        ("POST", "/api/v1/checkins"),
        ("POST", "/admin/v1/campaigns"),
    ],
)
async def test_bodies_over_the_cap_are_413_before_anything_runs(
    siyu: Siyu, api: httpx.AsyncClient, method: str, path: str
) -> None:
    member = await siyu.member(api)
    before = await _writes()
    oversized = json.dumps({"page": "p" * BODY_CAP}).encode()
    headers = {**member.auth, **ADMIN} if path.startswith("/admin") else member.auth
    r = await api.request(method, path, content=oversized, headers={**headers, "content-type": "application/json"})
    assert r.status_code == 413 and problem_type(r) == "payload-too-large"

    async def chunked() -> Any:
        for i in range(0, len(oversized), 1000):
            yield oversized[i : i + 1000]

    r = await api.request(method, path, content=chunked(), headers={**headers, "content-type": "application/json"})
    assert r.status_code == 413
    assert await _writes() == before


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/me/points/ledger?cursor=abc", 422),
        ("GET", "/api/v1/me/points/ledger?cursor=-1", 422),
        ("GET", "/api/v1/me/points/ledger?cursor=1234567890123456789012", 422),
        ("POST", "/api/v1/rewards/RW-Upper/redemptions", 422),
        ("POST", "/api/v1/rewards/r/redemptions", 422),
        ("POST", "/api/v1/rewards/..%2F..%2Finternal/redemptions", 404),
    ],
)
async def test_malformed_cursors_and_reward_ids_are_refused_at_the_door(
    siyu: Siyu, api: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    member = await siyu.member(api)
    before = await _writes()
    r = await api.request(method, path, headers={**member.auth, **key()})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert await _writes() == before


# ---------------------------------------------------------------------------------------------
# the operator API


async def test_the_operator_api_needs_the_admin_token(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    paths = [
        ("GET", f"/admin/v1/members/{member.member_id}"),
        ("GET", f"/admin/v1/members/{member.member_id}/messages"),
        ("POST", "/admin/v1/campaigns"),
        ("GET", f"/admin/v1/campaigns/{uuid.uuid4()}"),
        ("GET", f"/admin/v1/campaigns/{uuid.uuid4()}/preview"),
        ("POST", f"/admin/v1/campaigns/{uuid.uuid4()}/start"),
        ("POST", f"/admin/v1/campaigns/{uuid.uuid4()}/cancel"),
        ("GET", "/admin/v1/dead-letters"),
        ("POST", "/admin/v1/dead-letters/send-1/redrive"),
    ]
    wrong = [
        None,
        "Bearer wrong-token-of-the-right-length",
        f"Basic {ADMIN['Authorization'][7:]}",
        f"Bearer {member.token}",
        ADMIN["Authorization"] + "x",
    ]
    for method, path in paths:
        for authorization in wrong:
            headers = {"Authorization": authorization} if authorization else {}
            r = await api.request(method, path, headers=headers, json={})
            assert r.status_code == 401 and problem_type(r) == "invalid-admin-token", (path, authorization)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await api.get(f"/admin/v1/members/{member.member_id}", headers=ADMIN)
    assert r.status_code == 200


async def test_the_member_360_composes_identity_commerce_and_notify(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    order_id = await siyu.earn(api, member, 12800)
    await siyu.check_in(api, member)

    r = await api.get(f"/admin/v1/members/{member.member_id}", headers=ADMIN)

    assert r.status_code == 200, r.text
    view = r.json()
    assert view["member_id"] == member.member_id and view["unavailable"] == []
    assert {i["appid"] for i in view["identities"]} == {MP, SHOP}
    assert view["identities"][0]["openid"] in member.user["openids"].values()
    assert isinstance(view["tags"], list) and isinstance(view["follows"], list)
    assert view["phone_masked"] is None
    assert view["tier"] == "base"
    assert view["points"]["available"] == 133 and view["points"]["pending"] == 0
    assert [e["kind"] for e in view["points"]["ledger"]] == ["checkin", "earn"]
    assert [o["order_id"] for o in view["orders"]] == [order_id]
    assert isinstance(view["coupons"], list) and isinstance(view["messages"], list)

    r = await api.get(f"/admin/v1/members/{uuid.uuid4()}", headers=ADMIN)
    assert r.status_code == 404 and problem_type(r) == "member-not-found"
    r = await api.get("/admin/v1/members/not-a-member-id", headers=ADMIN)
    assert r.status_code == 422


async def test_a_campaign_is_created_previewed_started_read_and_cancelled(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    body = {
        "name": "会员日",
        "audience": {"member_ids": [member.member_id]},
        "message": {"title": "会员日双倍积分", "body": "今天下单积分翻倍", "page": "pages/campaign/index"},
        "kind": "marketing",
    }
    headers = {**ADMIN, **key()}
    r = await api.post("/admin/v1/campaigns", json=body, headers=headers)
    assert r.status_code == 201, r.text
    campaign_id = r.json()["campaign_id"]
    assert r.json() == {"campaign_id": campaign_id}
    replay = await api.post("/admin/v1/campaigns", json=body, headers=headers)
    assert replay.status_code == 201 and replay.json() == {"campaign_id": campaign_id}

    r = await api.get(f"/admin/v1/campaigns/{campaign_id}/preview", headers=ADMIN)
    assert r.status_code == 200, r.text
    preview = r.json()
    assert set(preview) == {"audience", "channels", "skipped"} and preview["audience"] == 1
    assert sum(preview["channels"].values()) + sum(preview["skipped"].values()) == 1

    r = await api.post(f"/admin/v1/campaigns/{campaign_id}/start", headers=ADMIN)
    assert r.status_code == 202 and r.json() == {"campaign_id": campaign_id, "state": "running"}

    async def settled() -> dict[str, Any] | None:
        r = await api.get(f"/admin/v1/campaigns/{campaign_id}", headers=ADMIN)
        assert r.status_code == 200, r.text
        c: dict[str, Any] = r.json()
        return c if c["state"] == "completed" else None

    recap = await eventually(settled)
    assert recap["targeted"] == 1
    assert recap["sent"] + sum(recap["skipped"].values()) + recap["failed"] == 1
    assert {"state", "targeted", "sent", "delivered", "skipped", "failed", "opened", "ordered"} <= set(recap)

    r = await api.post(f"/admin/v1/campaigns/{campaign_id}/cancel", headers=ADMIN)
    assert r.status_code == 409 and problem_type(r) == "conflict"

    # A draft cancelled cannot be started.
    draft = (await api.post("/admin/v1/campaigns", json=body, headers=ADMIN)).json()["campaign_id"]
    assert draft != campaign_id
    r = await api.post(f"/admin/v1/campaigns/{draft}/cancel", headers=ADMIN)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    r = await api.post(f"/admin/v1/campaigns/{draft}/start", headers=ADMIN)
    assert r.status_code == 409

    r = await api.get(f"/admin/v1/campaigns/{uuid.uuid4()}", headers=ADMIN)
    assert r.status_code == 404
    bad = {**body, "audience": {"tag": "vip", "member_ids": [member.member_id]}}
    r = await api.post("/admin/v1/campaigns", json=bad, headers=ADMIN)
    assert r.status_code == 422


# ---------------------------------------------------------------------------------------------
# dead letters: notify's dead sends and the bus's dead events


async def _publish(event_type: str, body: bytes, event_id: str, *, routing_key: str | None = None) -> None:
    """A message on this run's exchange (or, with ``routing_key``, straight into a queue)."""
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        message = amqp_message(event_id, event_type, body, {"x-siyu-error": "ValueError('boom')"})
        if routing_key is None:
            exchange = await Topology(namespace=NAMESPACE).declare_exchanges(channel)
            await exchange.publish(message, routing_key=event_type)
        else:
            await channel.default_exchange.publish(message, routing_key=routing_key)


async def dead_letters(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await api.get("/admin/v1/dead-letters", headers=ADMIN)
    assert r.status_code == 200, r.text
    letters: list[dict[str, Any]] = r.json()
    return letters


async def test_dead_events_of_every_service_are_listed_and_redriven_by_id(siyu: Siyu, api: httpx.AsyncClient) -> None:
    # A poison event: every service consuming its type gives up on it at once.
    poison = str(uuid.uuid4())
    await _publish("identity.member.registered", b"{not json", poison)

    async def both_dead() -> list[dict[str, Any]] | None:
        found = [d for d in await dead_letters(api) if d.get("event_id") == poison]
        return found if len(found) == 2 else None

    letters = await eventually(both_dead)
    assert {d["id"] for d in letters} == {f"event-commerce-{poison}", f"event-notify-{poison}"}
    for d in letters:
        assert d["kind"] == "event" and d["type"] == "identity.member.registered" and d["created_at"]

    # A valid event that failed for good earlier (its cause since fixed): redriven, it is handled.
    member_id, openid = str(uuid.uuid4()), f"o-redriven-{uuid.uuid4().hex[:8]}"
    event = Envelope.wrap(
        MemberRegistered(member_id=member_id, appid=MP, app_kind="mini_program", openid=openid, source="mp_login"),
        producer="identity",
    )
    topology = Topology(namespace=NAMESPACE)
    await _publish(
        event.type, event.model_dump_json().encode(), str(event.event_id), routing_key=topology.dlq("notify")
    )
    dead_id = f"event-notify-{event.event_id}"
    assert dead_id in {d["id"] for d in await dead_letters(api)}
    assert await sql("notify", "SELECT 1 FROM member_apps WHERE member_id = $1", member_id) == []

    r = await api.post(f"/admin/v1/dead-letters/{dead_id}/redrive", headers=ADMIN)

    assert r.status_code == 202 and r.json() == {"id": dead_id, "kind": "event", "status": "redriven"}
    await eventually(lambda: sql("notify", "SELECT 1 FROM member_apps WHERE member_id = $1", member_id))
    assert dead_id not in {d["id"] for d in await dead_letters(api)}
    r = await api.post(f"/admin/v1/dead-letters/{dead_id}/redrive", headers=ADMIN)
    assert r.status_code == 404

    # Redriving one service's copy moves that copy only: notify's goes round (and, poison still,
    # comes back marked as redriven); commerce's stays where it was, untouched.
    r = await api.post(f"/admin/v1/dead-letters/event-notify-{poison}/redrive", headers=ADMIN)
    assert r.status_code == 202

    async def redriven_back() -> bool:
        listing = await ops.dlq_list(AMQP, NAMESPACE, "notify")
        for i, m in enumerate(listing["messages"]):
            if m["event_id"] == poison:
                return bool((await ops.dlq_show(AMQP, NAMESPACE, "notify", i))["headers"].get("x-siyu-redriven"))
        return False

    await eventually(redriven_back)
    commerce = (await ops.dlq_list(AMQP, NAMESPACE, "commerce"))["messages"]
    index = next(i for i, m in enumerate(commerce) if m["event_id"] == poison)
    assert "x-siyu-redriven" not in (await ops.dlq_show(AMQP, NAMESPACE, "commerce", index))["headers"]

    for unknown in ("event-nobody-" + poison, f"event-commerce-{uuid.uuid4()}", "send-999999999", "garbage"):
        r = await api.post(f"/admin/v1/dead-letters/{unknown}/redrive", headers=ADMIN)
        assert r.status_code == 404 and problem_type(r) == "not-found", unknown


async def test_a_dead_send_is_listed_and_redriven_by_id(siyu: Siyu, api: httpx.AsyncClient) -> None:
    member = await siyu.member(api)
    template = await template_id(siyu, ORDER_PAID_TEMPLATE)
    await authorise(siyu, api, member, template)
    # WeChat keeps failing (-1, a system error notify retries) for as long as notify tries.
    fault = {"path": "/cgi-bin/message/subscribe/send", "errcode": -1, "count": 2}
    await siyu.sandbox_post("/sandbox/faults", fault)
    order_id = str((await siyu.order(member, 3900))["order_id"])
    await siyu.act(order_id, "pay")

    async def dead_send() -> list[dict[str, Any]]:
        return [d for d in await dead_letters(api) if d["kind"] == "send" and d["member_id"] == member.member_id]

    [letter] = await eventually(dead_send)
    assert letter["id"].startswith("send-") and letter["rule"] == "order_paid" and letter["service"] == "notify"
    assert letter["errcode"] == -1 and letter["attempts"] == 2

    r = await api.post(f"/admin/v1/dead-letters/{letter['id']}/redrive", headers=ADMIN)

    assert r.status_code == 202 and r.json() == {"id": letter["id"], "kind": "send", "status": "redriven"}

    async def delivered() -> list[dict[str, Any]]:
        return [m for m in await inbox(siyu, member) if m["kind"] == "subscribe" and m["template_id"] == template]

    await eventually(delivered)
    assert letter["id"] not in {d["id"] for d in await dead_letters(api)}
    r = await api.post(f"/admin/v1/dead-letters/{letter['id']}/redrive", headers=ADMIN)
    assert r.status_code == 404


# ---------------------------------------------------------------------------------------------
# the published contract


async def test_openapi_documents_every_route_with_its_answer_and_problems(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    expected = {
        "/api/v1/me/points/ledger": ("get", "200"),
        "/api/v1/me/orders": ("get", "200"),
        "/api/v1/rewards": ("get", "200"),
        "/api/v1/rewards/{reward_id}/redemptions": ("post", "201"),
        "/api/v1/me/coupons": ("get", "200"),
        "/api/v1/checkins": ("post", "201"),
        "/api/v1/subscriptions": ("post", "204"),
        "/api/v1/gifts": ("get", "200"),
        "/api/v1/opens": ("post", "200"),
        "/admin/v1/members/{member_id}": ("get", "200"),
        "/admin/v1/members/{member_id}/messages": ("get", "200"),
        "/admin/v1/campaigns": ("post", "201"),
        "/admin/v1/campaigns/{campaign_id}": ("get", "200"),
        "/admin/v1/campaigns/{campaign_id}/preview": ("get", "200"),
        "/admin/v1/campaigns/{campaign_id}/start": ("post", "202"),
        "/admin/v1/campaigns/{campaign_id}/cancel": ("post", "202"),
        "/admin/v1/dead-letters": ("get", "200"),
        "/admin/v1/dead-letters/{dead_letter_id}/redrive": ("post", "202"),
    }
    for path, (method, ok) in expected.items():
        operation = spec["paths"][path][method]
        assert operation["summary"], path
        responses = operation["responses"]
        assert ok in responses, path
        if ok != "204":
            assert "schema" in responses[ok]["content"]["application/json"], path
        for status in ("401", "422", "429", "503"):
            assert "application/problem+json" in responses[status]["content"], (path, status)
    redeem = spec["paths"]["/api/v1/rewards/{reward_id}/redemptions"]["post"]
    assert {"400", "404", "409"} <= set(redeem["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in redeem["parameters"])
    me = spec["components"]["schemas"]["MeOut"]["properties"]
    assert "points" in me and "tier" in me and "points_balance" not in me
