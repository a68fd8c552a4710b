"""Identity's internal API as the gateway uses it: logins, phone binding, behaviour events, and
everything it refuses (no credential, bad input, bad codes) without writing anything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.identity_fixtures import MP, OA, Identity, identity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

__all__ = ["identity"]

PROBLEM = "application/problem+json"


def now_iso(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def fault(identity: Identity, path: str, errcode: int, count: int = 1) -> None:
    await identity.sandbox.post("/sandbox/faults", {"path": path, "errcode": errcode, "count": count})


# --- the internal credential ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/internal/members/{member}", None),
        ("GET", "/internal/members?tag=follower", None),
        ("POST", "/internal/resolve", {"appid": OA, "openid": "{openid}"}),
        ("POST", "/internal/logins", {"appid": MP, "code": "abc"}),
        ("POST", "/internal/members/{member}/phone", {"appid": MP, "code": "abc"}),
        ("POST", "/internal/members/{member}/events", {"events": []}),
        ("POST", "/internal/members/{member}/tags", {"add": ["vip"], "operator": "x"}),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong-token-of-sufficient-length"])
async def test_member_a_cannot_read_member_b_without_the_internal_credential(
    identity: Identity, method: str, path: str, body: dict[str, Any] | None, token: str | None
) -> None:
    """Identity does not know end users: any caller without the internal credential is refused.
    Scoping a member to their own record is the gateway's job (README.md, "Who may ask")."""
    user = await identity.sandbox.user()
    member = (await identity.login(user))["member_id"]
    before = await identity.snapshot()
    headers = {"X-Siyu-Internal-Token": token} if token else {}
    raw = httpx.AsyncClient(transport=identity.api._transport, base_url="http://identity.test", headers=headers)
    url = path.format(member=member)
    payload = None
    if body is not None:
        payload = {k: (v.format(openid=user["openids"][OA]) if isinstance(v, str) else v) for k, v in body.items()}
    r = await raw.request(method, url, json=payload)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert problem["type"].endswith("/unauthorized")
    # Nothing about the member comes back (the problem names only the path that was asked for).
    assert user["openids"][OA] not in r.text and user["openids"][MP] not in r.text
    assert "identities" not in problem and "member_id" not in problem
    assert await identity.snapshot() == before


# --- logins -----------------------------------------------------------------------------------------


async def test_login_creates_then_finds_the_member(identity: Identity) -> None:
    user = await identity.sandbox.user()
    first = await identity.login(user)
    second = await identity.login(user)
    assert first["created"] is True and second["created"] is False
    assert first["member_id"] == second["member_id"]
    assert set(first) == {"member_id", "openid", "unionid_known", "created"}
    [registered] = await identity.published("identity.member.registered")
    assert registered["data"]["source"] == "mp_login"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"appid": MP}, 422),
        ({"appid": MP, "code": ""}, 422),
        ({"appid": MP, "code": "a b"}, 422),
        ({"appid": MP, "code": "x" * 300}, 422),
        ({"appid": MP, "code": "abc", "openid": "forged"}, 422),
        ({"appid": "not-an-appid", "code": "abc"}, 422),
        ({"appid": OA, "code": "abc"}, 422),  # an official account cannot log in
        ({"appid": "wx00000000000000ff", "code": "abc"}, 422),  # not the brand's app
        ({"appid": MP, "code": "neverissued"}, 401),
    ],
)
async def test_bad_login_input_is_refused_and_nothing_is_written(
    identity: Identity, body: dict[str, Any], status: int
) -> None:
    before = await identity.snapshot()
    r = await identity.api.post("/internal/logins", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert await identity.snapshot() == before


async def test_a_reused_login_code_is_401_invalid_code(identity: Identity) -> None:
    """Single use, as at WeChat: a replayed (or intercepted) code never yields a second login."""
    user = await identity.sandbox.user()
    code = await identity.sandbox.login_code(user)
    assert (await identity.api.post("/internal/logins", json={"appid": MP, "code": code})).status_code == 200
    before = await identity.snapshot()
    again = await identity.api.post("/internal/logins", json={"appid": MP, "code": code})
    assert again.status_code == 401
    problem = again.json()
    assert problem["type"].endswith("/invalid-code") and problem["errcode"] == 40163
    assert await identity.snapshot() == before


async def test_a_code_used_elsewhere_is_401_invalid_code(identity: Identity) -> None:
    user = await identity.sandbox.user()
    code = await identity.sandbox.login_code(user)
    await identity.sandbox.http.get(
        "/sns/jscode2session",
        params={"appid": MP, "secret": "dev-mp-secret-not-real", "js_code": code, "grant_type": "authorization_code"},
    )
    before = await identity.snapshot()
    r = await identity.api.post("/internal/logins", json={"appid": MP, "code": code})
    assert r.status_code == 401
    problem = r.json()
    assert problem["type"].endswith("/invalid-code") and problem["errcode"] == 40163
    assert await identity.snapshot() == before


@pytest.mark.parametrize(
    ("errcode", "count", "status", "retry_after"),
    [
        (40029, 1, 401, None),
        (40163, 1, 401, None),
        (40226, 1, 403, None),
        (-1, 3, 503, "2"),  # the client retries -1 itself; three in a row reach the caller
        (45011, 1, 503, "60"),
    ],
)
async def test_wechat_login_failures_map_to_the_contract(
    identity: Identity, errcode: int, count: int, status: int, retry_after: str | None
) -> None:
    user = await identity.sandbox.user()
    code = await identity.sandbox.login_code(user)
    await fault(identity, "/sns/jscode2session", errcode, count)
    before = await identity.snapshot()
    r = await identity.api.post("/internal/logins", json={"appid": MP, "code": code})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.headers.get("retry-after") == retry_after
    if status == 401:
        assert r.json()["type"].endswith("/invalid-code")
    assert await identity.snapshot() == before


# --- phone ------------------------------------------------------------------------------------------


async def bind(identity: Identity, member: str, user: dict[str, Any]) -> httpx.Response:
    code = await identity.sandbox.phone_code(user)
    return await identity.api.post(f"/internal/members/{member}/phone", json={"appid": MP, "code": code})


async def test_phone_binds_masked_and_again_is_a_no_op(identity: Identity) -> None:
    user = await identity.sandbox.user(phone="13812345678")
    member = (await identity.login(user))["member_id"]
    r = await bind(identity, member, user)
    assert r.status_code == 200, r.text
    assert r.json() == {"phone_masked": "138****5678", "country_code": "86", "bound": True}
    [row] = await identity.sql("SELECT e164, member_id::text FROM phones")
    assert row["e164"] == "+8613812345678" and row["member_id"] == member
    assert (await identity.member(member))["phone_masked"] == "138****5678"
    again = await bind(identity, member, user)
    assert again.status_code == 200
    assert len(await identity.published("identity.phone.bound")) == 1
    [event] = await identity.published("identity.phone.bound")
    assert "13812345678" not in str(event)


async def test_a_phone_held_by_another_member_is_409_and_never_merges(identity: Identity) -> None:
    owner = await identity.sandbox.user(phone="13900001111")
    other = await identity.sandbox.user(phone="13900001111")  # a family phone, or a recycled number
    owner_id = (await identity.login(owner))["member_id"]
    other_id = (await identity.login(other))["member_id"]
    assert (await bind(identity, owner_id, owner)).status_code == 200
    before = await identity.snapshot()
    r = await bind(identity, other_id, other)
    assert r.status_code == 409
    assert r.json()["type"].endswith("/phone-taken")
    assert await identity.snapshot() == before
    assert (await identity.member(other_id))["member_id"] == other_id


async def test_foreign_phone_numbers_are_normalised_to_e164(identity: Identity) -> None:
    user = await identity.sandbox.user(phone="91234567", country_code="852")
    member = (await identity.login(user))["member_id"]
    r = await bind(identity, member, user)
    assert r.json() == {"phone_masked": "912*4567", "country_code": "852", "bound": True}
    assert [r["e164"] for r in await identity.sql("SELECT e164 FROM phones")] == ["+85291234567"]


async def test_bad_phone_codes_are_401_and_write_nothing(identity: Identity) -> None:
    user = await identity.sandbox.user()
    member = (await identity.login(user))["member_id"]
    before = await identity.snapshot()
    r = await identity.api.post(f"/internal/members/{member}/phone", json={"appid": MP, "code": "neverissued"})
    assert r.status_code == 401 and r.json()["type"].endswith("/invalid-code")
    code = await identity.sandbox.phone_code(user)
    first = await identity.api.post(f"/internal/members/{member}/phone", json={"appid": MP, "code": code})
    assert first.is_success
    again = await identity.api.post(f"/internal/members/{member}/phone", json={"appid": MP, "code": code})
    assert again.status_code == 401  # single use
    other = (await identity.login(await identity.sandbox.user()))["member_id"]
    r = await identity.api.post(f"/internal/members/{other}/phone", json={"appid": MP, "code": code})
    assert r.status_code == 401
    unknown = await identity.api.post(
        "/internal/members/00000000-0000-4000-8000-000000000000/phone",
        json={"appid": MP, "code": await identity.sandbox.phone_code(user)},
    )
    assert unknown.status_code == 404
    [phone] = await identity.sql("SELECT member_id::text FROM phones")
    assert phone["member_id"] == member
    assert before["phones"] == []


# --- behaviour events -------------------------------------------------------------------------------


def event(kind: str = "product_view", object_id: str = "sku_1", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "object_id": object_id, "occurred_at": now_iso(timedelta(minutes=-1)), **extra}


async def test_behaviour_events_feed_the_profile_and_a_retry_counts_once(identity: Identity) -> None:
    user = await identity.sandbox.user()
    member = (await identity.login(user))["member_id"]
    batch = {
        "events": [
            event(),
            event("product_view", "sku_2"),
            event("add_to_cart", "sku_2", props={"qty": 2}),
            event("share", "sku_2", appid=MP),
            event("article_read", "post_9"),
        ]
    }
    r = await identity.api.post(f"/internal/members/{member}/events", json=batch)
    assert r.status_code == 202, r.text
    assert r.json() == {"member_id": member, "accepted": 5, "duplicates": 0}
    retry = await identity.api.post(f"/internal/members/{member}/events", json=batch)
    assert retry.json() == {"member_id": member, "accepted": 0, "duplicates": 5}
    profile = (await identity.member(member))["profile"]
    assert (profile["product_views"], profile["add_to_carts"], profile["shares"], profile["article_reads"]) == (
        2,
        1,
        1,
        1,
    )
    assert profile["last_active_at"] is not None


@pytest.mark.parametrize(
    "batch",
    [
        {"events": []},
        {"events": [event()] * 51},
        {"events": [event("checkout")]},
        {"events": [event(object_id="")]},
        {"events": [event(object_id="a b")]},
        {"events": [event(object_id="x" * 65)]},
        {"events": [event(), {**event(), "points": 100}]},
        {"events": [{**event(), "occurred_at": "2020-01-01T00:00:00"}]},  # no timezone
        {"events": [{**event(), "occurred_at": now_iso(timedelta(days=1))}]},
        {"events": [{**event(), "occurred_at": now_iso(timedelta(days=-60))}]},
        {"events": [event(props={f"k{i}": i for i in range(11)})]},
        {"events": [event(props={"k": "v" * 300})]},
        {"events": [event(props={"k": {"nested": 1}})]},
        {"events": [event(appid=OA)]},
        {"events": [event()], "member_id": "someone-else"},
    ],
)
async def test_bad_behaviour_batches_are_refused_whole(identity: Identity, batch: dict[str, Any]) -> None:
    user = await identity.sandbox.user()
    member = (await identity.login(user))["member_id"]
    before = await identity.snapshot()
    r = await identity.api.post(f"/internal/members/{member}/events", json=batch)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert await identity.snapshot() == before


async def test_events_for_an_unknown_member_are_404(identity: Identity) -> None:
    r = await identity.api.post(
        "/internal/members/00000000-0000-4000-8000-000000000000/events", json={"events": [event()]}
    )
    assert r.status_code == 404
    assert await identity.count("SELECT count(*) FROM behaviour_events") == 0


async def test_a_malformed_member_id_is_422(identity: Identity) -> None:
    assert (await identity.api.get("/internal/members/1")).status_code == 422
    assert (await identity.api.get("/internal/members/00000000-0000-4000-8000-000000000000")).status_code == 404


async def test_identities_endpoint_links_a_shop_buyer_by_unionid(identity: Identity) -> None:
    user = await identity.sandbox.user()
    member = (await identity.login(user))["member_id"]
    shop = "wx0000000000000003"
    body = {"appid": shop, "openid": user["openids"][shop], "unionid": user["unionid"], "source": "shop_order"}
    r = await identity.api.post("/internal/identities", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"member_id": member, "created": False, "unionid_known": True, "merged": []}
    assert (await identity.api.post("/internal/identities", json=body)).json()["member_id"] == member
    kinds = sorted(i["app_kind"] for i in (await identity.member(member))["identities"])
    assert kinds == ["mini_program", "shop"]


async def test_shop_membership_callbacks_answer_for_known_mini_program_users(identity: Identity) -> None:
    user = await identity.sandbox.user()
    member = (await identity.login(user))["member_id"]
    payload = {"info": {"shop_appid": "wx0000000000000003"}}
    known = {"appid": MP, "openid": user["openids"][MP], "payload": payload}
    r = await identity.api.post("/internal/shop/vip-user-info", json=known)
    assert r.json() == {
        "errcode": 0,
        "errmsg": "ok",
        "info": {"is_vip": True, "identity": "会员", "outer_userid": member},
    }
    stranger = {"appid": MP, "openid": "oUnknownOpenid000000000000000", "payload": payload}
    r = await identity.api.post("/internal/shop/vip-user-info", json=stranger)
    assert r.json() == {"errcode": 0, "errmsg": "ok", "info": {"is_vip": False}}
    r = await identity.api.post("/internal/shop/vip-user-auto-add", json=known)
    assert r.json() == {"errcode": 0, "errmsg": "ok"}
