"""The mini-program API (/api/v1) of a real gateway app on a real, migrated PostgreSQL database.

The gateway runs in-process (its lifespan: database, broker, background jobs) behind an ASGI
transport; each client has its own address so per-IP limits can be told apart. The database is
this module's own (``siyu_test_<run>_<worker>_gwapi``, a copy of the run's migrated gateway template), so the
API's counters and keys are never truncated by another module's fixtures. Identity is an external
service from the gateway's view and is stood in for by respx at its contract
(``/internal/logins``, ``/internal/members/{id}``, ``.../phone``, ``.../events``); commerce is
unreachable here, so ``/me`` answers identity's part with ``tier`` and ``points`` null
(test_gateway_routes.py runs the real commerce).
Assertions on "nothing written" read the gateway's database directly.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import respx

from services.gateway.app import create_app
from services.gateway.ratelimit.schemas import ApiLimits, Bucket, Limit
from services.gateway.ratelimit.service import RateLimiter
from services.gateway.sessions.service import AUDIENCE, ISSUER, SessionTokens, key_id
from services.gateway.settings import GatewaySettings
from shared.db import Database
from shared.settings import DEV_INTERNAL_TOKEN
from tests.conftest import PG, RUN_ID, clone_database, drop_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

IDENTITY = "http://identity.test"
OA = "wx0000000000000001"
MP = "wx0000000000000002"
SHOP = "wx0000000000000003"
SECRET = "test-session-secret-current-0123456789abcdef"
PREVIOUS = "test-session-secret-previous-0123456789abcdef"
UNKNOWN = "test-session-secret-unknown-0123456789abcdef"
LIMITS = {"ip": 40, "login": 6, "member": 12, "events": 5}
BODY_CAP = 8192
API_DB_NAME = f"siyu_test_{RUN_ID}_gwapi"
API_DB = f"{PG}/{API_DB_NAME}"


def gateway_settings() -> GatewaySettings:
    return GatewaySettings(
        session_secret=SECRET,
        **{
            "GATEWAY_DATABASE_URL": API_DB,
            "GATEWAY_IDENTITY_URL": IDENTITY,
            "GATEWAY_COMMERCE_URL": "http://commerce.test",
            "GATEWAY_NOTIFY_URL": "http://notify.test",
            "GATEWAY_SESSION_PREVIOUS_SECRETS": PREVIOUS,
            "GATEWAY_API_MAX_BODY_BYTES": BODY_CAP,
            "GATEWAY_RATE_IP_PER_MINUTE": LIMITS["ip"],
            "GATEWAY_RATE_LOGIN_IP_PER_MINUTE": LIMITS["login"],
            "GATEWAY_RATE_MEMBER_PER_MINUTE": LIMITS["member"],
            "GATEWAY_RATE_EVENTS_PER_MINUTE": LIMITS["events"],
        },
    )


@dataclass
class Gateway:
    app: Any

    def client(self, ip: str = "198.51.100.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


@pytest.fixture(scope="module")
async def api_db() -> AsyncIterator[str]:
    """A gateway database of this module's own, dropped afterwards."""
    yield await clone_database("gateway", API_DB_NAME)
    await drop_database(API_DB_NAME)


@pytest.fixture(scope="module")
async def api_gateway(api_db: str) -> AsyncIterator[Gateway]:
    app = create_app(gateway_settings())
    async with app.router.lifespan_context(app):
        yield Gateway(app)


_outbox_before: list[int] = []


@pytest.fixture(autouse=True)
async def clean_gateway(api_db: str) -> None:
    """Forget the API's state between tests (only its own tables: the callbacks' janitor runs too)."""
    conn = await asyncpg.connect(API_DB)
    try:
        # DELETE: a few rows, and TRUNCATE would make new files for both tables before every test.
        await conn.execute("DELETE FROM rate_limits; DELETE FROM idempotency_keys")
        _outbox_before[:] = [int(await conn.fetchval("SELECT count(*) FROM outbox"))]
    finally:
        await conn.close()


@pytest.fixture
async def api(api_gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with api_gateway.client() as client:
        yield client


async def gateway_rows(table: str) -> int:
    conn = await asyncpg.connect(API_DB)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def assert_nothing_written() -> None:
    assert await gateway_rows("idempotency_keys") == 0
    assert [await gateway_rows("outbox")] == _outbox_before


# ---------------------------------------------------------------------------------------------
# identity, as its internal contract says it answers


def problem(status: int, slug: str, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": f"https://siyu.dev/problems/{slug}", "title": slug, "status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def member_view(member_id: str, **overrides: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "member_id": member_id,
        "unionid_known": True,
        "source": "mini_program",
        "first_scene": None,
        "created_at": "2026-11-01T00:00:00Z",
        "identities": [
            {"appid": MP, "app_kind": "mini_program", "openid": f"o-mp-{member_id[:8]}", "learned_via": "login"},
        ],
        "follows": [],
    }
    view.update(overrides)
    return view


@pytest.fixture
def identity() -> Iterator[respx.MockRouter]:
    with (
        respx.mock(base_url=IDENTITY, assert_all_called=False) as router,
        respx.mock(base_url="http://commerce.test", assert_all_called=False) as commerce,
    ):
        commerce.route().mock(side_effect=httpx.ConnectError("commerce is down"))
        router.get(path__regex=r"^/internal/members/(?P<member_id>[0-9a-f-]{36})$", name="member").mock(
            side_effect=lambda request, member_id: httpx.Response(200, json=member_view(member_id))
        )
        router.post(path__regex=r"^/internal/members/(?P<member_id>[0-9a-f-]{36})/events$", name="events").mock(
            return_value=httpx.Response(202, json={"accepted": True})
        )
        router.post(path__regex=r"^/internal/members/(?P<member_id>[0-9a-f-]{36})/phone$", name="phone").mock(
            return_value=httpx.Response(200, json={"phone_masked": "138****0000", "country_code": "86", "bound": True})
        )
        yield router


def login_answers(member_id: uuid.UUID) -> httpx.Response:
    return httpx.Response(
        200, json={"member_id": str(member_id), "openid": "o-mp-1", "unionid_known": True, "created": True}
    )


def token_for(member_id: uuid.UUID, *, secret: str = SECRET, now: datetime | None = None) -> str:
    return SessionTokens(secret, ttl=7200).issue(member_id, MP, now=now).token


def bearer(member_id: uuid.UUID, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(member_id, **kw)}"}


def called_paths(router: respx.MockRouter) -> list[str]:
    return [call.request.url.path for call in router.calls]


def event(kind: str = "product_view", object_id: str = "1000000000000000001") -> dict[str, str]:
    return {"type": kind, "object_id": object_id, "occurred_at": datetime.now(UTC).isoformat()}


# ---------------------------------------------------------------------------------------------
# POST /sessions


async def test_login_code_becomes_a_session_token_for_the_member(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    member_id = uuid.uuid4()
    logins = identity.post("/internal/logins").mock(return_value=login_answers(member_id))

    before = int(time.time())
    r = await api.post("/api/v1/sessions", json={"code": "0a1B2c3D"}, headers={"X-Request-Id": "req-login-1"})

    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"token", "expires_at", "member_id"}
    assert body["member_id"] == str(member_id)
    # identity was asked with the mini-program's appid, the internal credential and the request context.
    sent = logins.calls.last.request
    assert json.loads(sent.content) == {"appid": MP, "code": "0a1B2c3D"}
    assert sent.headers["X-Siyu-Internal-Token"] == DEV_INTERNAL_TOKEN
    assert sent.headers["X-Request-Id"] == "req-login-1"
    assert sent.headers["traceparent"].startswith("00-")
    # The token: HS256, kid of the current secret, the claims the design fixes, 2 h.
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "HS256" and header["kid"] == key_id(SECRET)
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["sub"] == str(member_id) and claims["appid"] == MP and claims["jti"]
    assert claims["exp"] - claims["iat"] == 7200 and claims["iat"] >= before - 1
    assert datetime.fromisoformat(body["expires_at"]) == datetime.fromtimestamp(claims["exp"], UTC)
    assert "session_key" not in r.text

    me = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200 and me.json()["member_id"] == str(member_id)


@pytest.mark.parametrize("errcode", [40029, 40163])
async def test_bad_or_reused_code_is_401_and_writes_nothing(
    api: httpx.AsyncClient, identity: respx.MockRouter, errcode: int
) -> None:
    identity.post("/internal/logins").mock(
        return_value=problem(
            401, "invalid-code", "code been used" if errcode == 40163 else "invalid code", errcode=errcode
        )
    )

    r = await api.post("/api/v1/sessions", json={"code": "used-code"}, headers={"Idempotency-Key": str(uuid.uuid4())})

    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert p["type"].endswith("/invalid-code") and p["status"] == 401
    assert "wx.login" in p["detail"] and p["errcode"] == errcode
    assert "token" not in p
    await assert_nothing_written()


@pytest.mark.parametrize(("errcode", "retry_after", "expected"), [(-1, "7", "7"), (45011, None, "5")])
async def test_wechat_busy_is_503_with_retry_after(
    api: httpx.AsyncClient, identity: respx.MockRouter, errcode: int, retry_after: str | None, expected: str
) -> None:
    answer = problem(503, "wechat-unavailable", "WeChat is busy", errcode=errcode)
    if retry_after:
        answer.headers["Retry-After"] = retry_after
    logins = identity.post("/internal/logins").mock(return_value=answer)

    r = await api.post("/api/v1/sessions", json={"code": "c0de"})

    assert r.status_code == 503
    assert r.headers["Retry-After"] == expected
    assert r.json()["errcode"] == errcode and "retry" in r.json()["detail"]
    assert logins.call_count == 1, "a POST that signs in is never replayed by the transport"
    await assert_nothing_written()


async def test_high_risk_login_is_a_clear_403(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    identity.post("/internal/logins").mock(return_value=problem(403, "login-blocked", "risk", errcode=40226))

    r = await api.post("/api/v1/sessions", json={"code": "risky"})

    assert r.status_code == 403
    p = r.json()
    assert p["type"].endswith("/login-blocked")
    assert "high-risk" in p["detail"] and "40226" in p["detail"]
    assert "Retrying will not help" in p["detail"]


async def test_identity_unreachable_is_503_with_retry_after(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    identity.post("/internal/logins").mock(side_effect=httpx.ConnectError("refused"))

    r = await api.post("/api/v1/sessions", json={"code": "c0de"})

    assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
    assert r.json()["type"].endswith("/dependency-unavailable")


async def test_identity_refusing_our_internal_credential_is_not_blamed_on_the_code(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    identity.post("/internal/logins").mock(return_value=problem(401, "unauthorized", "internal"))

    r = await api.post("/api/v1/sessions", json={"code": "c0de"})

    assert r.status_code == 502
    assert "credential" in r.json()["detail"]


# ---------------------------------------------------------------------------------------------
# tokens


def _forge(claims: dict[str, Any], key: str, kid: str | None, alg: str = "HS256") -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _claims(member_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(member_id), "appid": MP, "iat": now, "exp": now + 600}
    claims["jti"] = "j1"
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _tamper(token: str, member_id: uuid.UUID) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["sub"] = str(member_id)
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{forged}.{signature}"


TOKENS: dict[str, Callable[[uuid.UUID], str]] = {
    "expired": lambda m: token_for(m, now=datetime.now(UTC) - timedelta(hours=3)),
    "unknown key": lambda m: token_for(m, secret=UNKNOWN),
    "known kid, other key": lambda m: _forge(_claims(m), UNKNOWN, key_id(SECRET)),
    "no kid": lambda m: _forge(_claims(m), SECRET, None),
    "tampered": lambda m: _tamper(token_for(m), uuid.uuid4()),
    "wrong audience": lambda m: _forge(_claims(m, aud="someone-else"), SECRET, key_id(SECRET)),
    "wrong issuer": lambda m: _forge(_claims(m, iss="not-siyu"), SECRET, key_id(SECRET)),
    "no expiry": lambda m: _forge(_claims(m, exp=None), SECRET, key_id(SECRET)),
    "sub not a member id": lambda m: _forge(_claims(m, sub="admin"), SECRET, key_id(SECRET)),
    "alg none": lambda m: jwt.encode(_claims(m), None, algorithm="none", headers={"kid": key_id(SECRET)}),
    "not a jwt": lambda m: "not-a-token",
}


@pytest.mark.parametrize("kind", list(TOKENS))
async def test_invalid_tokens_are_401(api: httpx.AsyncClient, identity: respx.MockRouter, kind: str) -> None:
    member_id = uuid.uuid4()
    r = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {TOKENS[kind](member_id)}"})

    assert r.status_code == 401, kind
    assert r.json()["type"].endswith("/invalid-session")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert identity.calls.call_count == 0, "nothing is forwarded without a valid session"


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer"])
async def test_missing_token_is_401(
    api: httpx.AsyncClient, identity: respx.MockRouter, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = await api.get("/api/v1/me", headers=headers)
    assert r.status_code == 401 and r.json()["type"].endswith("/session-required")
    assert identity.calls.call_count == 0


async def test_expired_message_says_sign_in_again(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    r = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {TOKENS['expired'](uuid.uuid4())}"})
    assert "expired" in r.json()["detail"]


async def test_token_signed_with_the_previous_secret_is_still_accepted(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    member_id = uuid.uuid4()
    old = token_for(member_id, secret=PREVIOUS)
    assert jwt.get_unverified_header(old)["kid"] == key_id(PREVIOUS)

    r = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {old}"})

    assert r.status_code == 200 and r.json()["member_id"] == str(member_id)
    # New tokens are signed with the current secret only.
    identity.post("/internal/logins").mock(return_value=login_answers(member_id))
    fresh = (await api.post("/api/v1/sessions", json={"code": "new"})).json()["token"]
    assert jwt.get_unverified_header(fresh)["kid"] == key_id(SECRET)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(fresh, PREVIOUS, algorithms=["HS256"], audience=AUDIENCE)


# ---------------------------------------------------------------------------------------------
# GET /me


async def test_me_composes_identity_answer(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    member_id = uuid.uuid4()
    view = member_view(
        str(member_id),
        identities=[
            {"appid": OA, "app_kind": "official_account", "openid": "o-oa"},
            {"appid": MP, "app_kind": "mini_program", "openid": "o-mp"},
            {"appid": SHOP, "app_kind": "shop", "openid": "o-shop"},
            {"appid": "wx9999999999999999", "app_kind": "mini_program", "openid": "o-other-brand"},
        ],
        follows=[{"appid": OA, "subscribed": True, "first_scene": "store_42"}],
        phone_masked="138****0000",
    )
    identity.routes["member"].mock(return_value=httpx.Response(200, json=view))

    r = await api.get("/api/v1/me", headers=bearer(member_id))

    assert r.status_code == 200
    assert r.json() == {
        "member_id": str(member_id),
        "unionid_known": True,
        "linked_apps": [
            {"appid": OA, "kind": "official_account"},
            {"appid": MP, "kind": "mini_program"},
            {"appid": SHOP, "kind": "shop"},
        ],
        "service_account": {"appid": OA, "following": True},
        "phone_masked": "138****0000",
        "tier": None,
        "points": None,
    }
    assert "o-oa" not in r.text, "openids stay inside Siyu"
    [call] = identity.routes["member"].calls
    assert call.request.url.path == f"/internal/members/{member_id}"
    assert call.request.headers["X-Siyu-Internal-Token"] == DEV_INTERNAL_TOKEN


async def test_me_of_a_member_who_never_followed(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    member_id = uuid.uuid4()
    r = await api.get("/api/v1/me", headers=bearer(member_id))
    body = r.json()
    assert body["service_account"] == {"appid": OA, "following": False}
    assert body["linked_apps"] == [{"appid": MP, "kind": "mini_program"}]


async def test_me_when_identity_no_longer_knows_the_member_is_401(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    identity.routes["member"].mock(return_value=problem(404, "not-found", "no such member"))
    r = await api.get("/api/v1/me", headers=bearer(uuid.uuid4()))
    assert r.status_code == 401 and r.json()["type"].endswith("/member-not-found")


async def test_an_unexpected_identity_body_is_502_not_a_crash(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    identity.routes["member"].mock(return_value=httpx.Response(200, json={"hello": "world"}))
    r = await api.get("/api/v1/me", headers=bearer(uuid.uuid4()))
    assert r.status_code == 502 and r.headers["content-type"] == "application/problem+json"


# ---------------------------------------------------------------------------------------------
# BOLA: the member id comes only from the token


async def test_member_a_cannot_read_or_change_member_b_through_any_route(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    as_a = bearer(a)

    # A query parameter naming B is ignored: A gets A.
    r = await api.get("/api/v1/me", params={"member_id": str(b)}, headers=as_a)
    assert r.status_code == 200 and r.json()["member_id"] == str(a)
    # A header pretending to be internal changes nothing either.
    r = await api.get(
        "/api/v1/me", headers={**as_a, "X-Siyu-Internal-Token": DEV_INTERNAL_TOKEN, "X-Member-Id": str(b)}
    )
    assert r.json()["member_id"] == str(a)

    # A body naming B is refused outright (unknown field), before anything is forwarded.
    for path, body in [
        ("/api/v1/me/phone", {"code": "p1", "member_id": str(b)}),
        ("/api/v1/events", {"events": [event()], "member_id": str(b)}),
        ("/api/v1/events", {"events": [{**event(), "member_id": str(b)}]}),
        ("/api/v1/sessions", {"code": "c", "member_id": str(b)}),
    ]:
        r = await api.post(path, json=body, headers=as_a)
        assert r.status_code == 422, (path, r.text)

    # What is forwarded is scoped to A, whatever A sends.
    assert (await api.post("/api/v1/me/phone", json={"code": "p1"}, headers=as_a)).status_code == 200
    assert (await api.post("/api/v1/events", json={"events": [event()]}, headers=as_a)).status_code == 202
    # There is no route that takes a member id at all.
    assert (await api.get(f"/api/v1/members/{b}", headers=as_a)).status_code == 404

    paths = called_paths(identity)
    assert paths == [
        f"/internal/members/{a}",
        f"/internal/members/{a}",
        f"/internal/members/{a}/phone",
        f"/internal/members/{a}/events",
    ]
    assert not any(str(b) in json.dumps(json.loads(c.request.content or b"null")) for c in identity.calls)


async def test_idempotency_keys_are_scoped_to_the_member(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    key = str(uuid.uuid4())
    body = {"events": [event(object_id="42")]}

    ra = await api.post("/api/v1/events", json=body, headers={**bearer(a), "Idempotency-Key": key})
    rb = await api.post("/api/v1/events", json=body, headers={**bearer(b), "Idempotency-Key": key})

    assert ra.status_code == rb.status_code == 202
    assert "Idempotent-Replayed" not in rb.headers, "B must never get A's stored answer"
    assert called_paths(identity) == [f"/internal/members/{a}/events", f"/internal/members/{b}/events"]


# ---------------------------------------------------------------------------------------------
# POST /me/phone and POST /events


async def test_bind_phone_forwards_the_code_with_the_sessions_app(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    member_id = uuid.uuid4()
    r = await api.post("/api/v1/me/phone", json={"code": "phone-code-1"}, headers=bearer(member_id))
    assert r.status_code == 200
    assert r.json() == {"phone_masked": "138****0000", "country_code": "86", "bound": True}
    assert json.loads(identity.routes["phone"].calls.last.request.content) == {"appid": MP, "code": "phone-code-1"}


@pytest.mark.parametrize(
    ("status", "slug", "expected", "expected_slug"),
    [(409, "conflict", 409, "phone-taken"), (401, "invalid-code", 401, "invalid-phone-code")],
)
async def test_bind_phone_refusals(
    api: httpx.AsyncClient, identity: respx.MockRouter, status: int, slug: str, expected: int, expected_slug: str
) -> None:
    identity.routes["phone"].mock(return_value=problem(status, slug, "no"))
    r = await api.post(
        "/api/v1/me/phone", json={"code": "c"}, headers={**bearer(uuid.uuid4()), "Idempotency-Key": "k-phone-1"}
    )
    assert r.status_code == expected and r.json()["type"].endswith(f"/{expected_slug}")
    await assert_nothing_written()


async def test_events_are_validated_and_forwarded_to_identity(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    member_id = uuid.uuid4()
    events = [event("product_view", "1000000000000000001"), event("add_to_cart", "sku-9"), event("share", "p:1")]
    events.append(event("article_read", "a.1"))

    r = await api.post("/api/v1/events", json={"events": events}, headers=bearer(member_id))

    assert r.status_code == 202 and r.json() == {"accepted": 4}
    sent = json.loads(identity.routes["events"].calls.last.request.content)
    assert [e["type"] for e in sent["events"]] == ["product_view", "add_to_cart", "share", "article_read"]
    assert sent["events"][0]["object_id"] == "1000000000000000001", "19-digit ids stay strings"
    assert set(sent) == {"events"}
    assert {e["appid"] for e in sent["events"]} == {MP}, "the app is the session's"


async def test_event_props_are_forwarded_within_their_bounds(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    props = {"quantity": 2, "channel": "moments", "first": True}
    r = await api.post(
        "/api/v1/events", json={"events": [{**event("add_to_cart"), "props": props}]}, headers=bearer(uuid.uuid4())
    )
    assert r.status_code == 202
    assert json.loads(identity.routes["events"].calls.last.request.content)["events"][0]["props"] == props


def _old(e: dict[str, str]) -> dict[str, str]:
    return {**e, "occurred_at": (datetime.now(UTC) - timedelta(days=31)).isoformat()}


BAD_EVENTS: dict[str, Any] = {
    "51 events": {"events": [event() for _ in range(51)]},
    "no events": {"events": []},
    "unknown type": {"events": [event("purchase")]},
    "unknown field": {"events": [{**event(), "price": 1}]},
    "naive time": {"events": [{**event(), "occurred_at": "2026-11-22T10:00:00"}]},
    "future": {"events": [{**event(), "occurred_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}]},
    "too old": {"events": [_old(event())]},
    "object id with a slash": {"events": [event(object_id="../../admin")]},
    "object id as a number": {"events": [{**event(), "object_id": 1000000000000000001}]},
    "not an object": [event()],
    "client claims the app": {"events": [{**event(), "appid": "wx9999999999999999"}]},
    "11 props": {"events": [{**event(), "props": {f"k{i}": i for i in range(11)}}]},
    "props key not a word": {"events": [{**event(), "props": {"a-b": 1}}]},
    "props value too long": {"events": [{**event(), "props": {"a": "x" * 257}}]},
    "props value nested": {"events": [{**event(), "props": {"a": {"b": 1}}}]},
    "props number over 53 bits": {"events": [{**event(), "props": {"a": 2**60}}]},
}


@pytest.mark.parametrize("case", list(BAD_EVENTS))
async def test_invalid_events_are_422_and_nothing_is_forwarded(
    api: httpx.AsyncClient, identity: respx.MockRouter, case: str
) -> None:
    r = await api.post(
        "/api/v1/events", json=BAD_EVENTS[case], headers={**bearer(uuid.uuid4()), "Idempotency-Key": "k-1"}
    )
    assert r.status_code == 422, case
    assert r.json()["type"].endswith("/validation-error")
    assert identity.routes["events"].call_count == 0
    await assert_nothing_written()


# ---------------------------------------------------------------------------------------------
# request hygiene: unknown fields, body cap


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/sessions", {"code": "c", "openid": "o-forged"}),
        ("/api/v1/sessions", {"code": "c", "unionid": "u-forged"}),
        ("/api/v1/me/phone", {"code": "c", "phone": "13800000000"}),
        ("/api/v1/events", {"events": [event()], "points": 100}),
    ],
)
async def test_unknown_fields_are_422(
    api: httpx.AsyncClient, identity: respx.MockRouter, path: str, body: dict[str, Any]
) -> None:
    r = await api.post(path, json=body, headers={**bearer(uuid.uuid4()), "Idempotency-Key": "k-unknown"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["type"] == "extra_forbidden"
    assert identity.calls.call_count == 0
    await assert_nothing_written()


async def test_body_over_the_cap_is_413_and_nothing_is_forwarded(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    big = {"events": [event(object_id="x" * 64) for _ in range(80)]}
    raw = json.dumps(big).encode()
    assert len(raw) > BODY_CAP
    headers = {**bearer(uuid.uuid4()), "Idempotency-Key": "k-big", "content-type": "application/json"}

    declared = await api.post("/api/v1/events", content=raw, headers=headers)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    streamed = await api.post("/api/v1/events", content=chunks(), headers=headers)

    for r in (declared, streamed):
        assert r.status_code == 413, (r.request.headers, r.text)
        assert r.json()["type"].endswith("/payload-too-large")
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert identity.calls.call_count == 0
    await assert_nothing_written()


async def test_malformed_json_is_422(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    r = await api.post("/api/v1/sessions", content=b'{"code": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


# ---------------------------------------------------------------------------------------------
# rate limits


async def test_member_rate_limit_is_429_with_retry_after(api_gateway: Gateway, identity: respx.MockRouter) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    async with api_gateway.client("203.0.113.10") as one, api_gateway.client("203.0.113.11") as two:
        statuses = [(await one.get("/api/v1/me", headers=bearer(a))).status_code for _ in range(LIMITS["member"])]
        assert statuses == [200] * LIMITS["member"]

        # Same member from another address: still the same member's budget.
        r = await two.get("/api/v1/me", headers=bearer(a))
        assert r.status_code == 429
        retry = int(r.headers["Retry-After"])
        assert 1 <= retry <= 60 // LIMITS["member"]
        p = r.json()
        assert p["type"].endswith("/rate-limited") and p["limit"] == "member" and p["retry_after"] == retry

        # Another member is not affected.
        assert (await one.get("/api/v1/me", headers=bearer(b))).status_code == 200
    assert identity.routes["member"].call_count == LIMITS["member"] + 1


async def test_ip_rate_limit_is_429_with_retry_after_even_without_a_token(api_gateway: Gateway) -> None:
    async with api_gateway.client("192.0.2.50") as noisy, api_gateway.client("192.0.2.51") as quiet:
        statuses = [(await noisy.get("/api/v1/me")).status_code for _ in range(LIMITS["ip"])]
        assert statuses == [401] * LIMITS["ip"]

        r = await noisy.get("/api/v1/me")
        assert r.status_code == 429 and r.json()["limit"] == "ip"
        assert 1 <= int(r.headers["Retry-After"]) <= 60 // LIMITS["ip"] + 1

        assert (await quiet.get("/api/v1/me")).status_code == 401, "another address has its own budget"


async def test_sign_in_has_its_own_tighter_per_ip_limit(api_gateway: Gateway, identity: respx.MockRouter) -> None:
    identity.post("/internal/logins").mock(return_value=problem(401, "invalid-code", "bad"))
    async with api_gateway.client("192.0.2.60") as client:
        statuses = [(await client.post("/api/v1/sessions", json={"code": f"c{i}"})).status_code for i in range(8)]
    assert statuses == [401] * LIMITS["login"] + [429] * (8 - LIMITS["login"])
    assert identity.calls.call_count == LIMITS["login"], "a refused sign-in never reaches identity"


async def test_events_have_their_own_per_member_limit(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    member = bearer(uuid.uuid4())
    statuses = [
        (await api.post("/api/v1/events", json={"events": [event()]}, headers=member)).status_code
        for _ in range(LIMITS["events"] + 1)
    ]
    assert statuses == [202] * LIMITS["events"] + [429]
    assert (await api.get("/api/v1/me", headers=member)).status_code == 200, "other routes keep working"


async def test_ipv6_clients_share_a_limit_per_64(api_gateway: Gateway) -> None:
    async with api_gateway.client("2001:db8:1:2::1") as first, api_gateway.client("2001:db8:1:2::ffff") as second:
        for _ in range(LIMITS["ip"]):
            await first.get("/api/v1/me")
        assert (await second.get("/api/v1/me")).status_code == 429


async def test_limiter_is_exact_under_concurrency_across_replicas(api_db: str) -> None:
    """Two limiters on two pools (two replicas) hammering one key: exactly ``limit`` get through."""
    dbs = [await Database(gateway_settings().database_dsn, max_size=10).open() for _ in range(2)]
    try:
        limits = ApiLimits.from_settings(gateway_settings())
        limiters = [RateLimiter(db, limits) for db in dbs]
        bucket = Bucket(Limit("bench", 10), f"k-{uuid.uuid4()}", "client address")
        decisions = await asyncio.gather(*(limiters[i % 2].check([bucket]) for i in range(40)))
        assert sum(d.allowed for [d] in decisions) == 10
        assert all(1 <= d.retry_after <= 6 for [d] in decisions if not d.allowed)
    finally:
        for db in dbs:
            await db.close()


async def test_every_bucket_of_a_request_is_checked_by_one_statement(api_db: str) -> None:
    """Address, member and route buckets: one round trip, each bucket its own verdict and row."""
    db = await Database(gateway_settings().database_dsn, min_size=1, max_size=1).open()
    statements: list[str] = []
    try:
        async with db.connection() as conn:
            conn.add_query_logger(lambda record: statements.append(record.query))
        member = str(uuid.uuid4())
        tight, roomy = Limit("events", 2), Limit("member", 100)
        buckets = [
            Bucket(Limit("ip", 100), "203.0.113.99", "client address"),
            Bucket(roomy, member, "member"),
            Bucket(tight, member, "member"),
        ]
        limiter = RateLimiter(db, ApiLimits.from_settings(gateway_settings()))
        # The first use of a statement on a connection also asks PostgreSQL about its types, once.
        await limiter.check([Bucket(Limit("ip", 100), "203.0.113.98", "client address")])
        statements.clear()
        rounds = [await limiter.check(buckets) for _ in range(3)]
        assert len(statements) == 3, statements
        assert [[d.allowed for d in r] for r in rounds] == [[True] * 3, [True] * 3, [True, True, False]]
        # A refused bucket does not stop the others from counting the request.
        async with db.connection() as conn:
            tats = await conn.fetch(
                "SELECT key, tat - now() AS ahead FROM rate_limits WHERE key = ANY($1::text[]) ORDER BY key",
                [b.row_key for b in buckets],
            )
        assert len(tats) == 3
        with pytest.raises(Exception) as refused:
            await limiter.enforce(buckets)
        assert refused.value.status == 429 and refused.value.extra["limit"] == "events"  # type: ignore[attr-defined]
    finally:
        await db.close()


async def test_the_limiter_fails_open_when_the_database_is_away(api_db: str) -> None:
    db = await Database(gateway_settings().database_dsn, min_size=1, max_size=1, acquire_timeout=0.2).open()
    try:
        limiter = RateLimiter(db, ApiLimits.from_settings(gateway_settings()))
        bucket = Bucket(Limit("ip", 1), "203.0.113.100", "client address")
        async with db.connection():  # the only connection is busy: the check cannot get one in time
            decisions = [await limiter.check([bucket]) for _ in range(3)]
        assert all(d.allowed for [d] in decisions)
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------
# Idempotency-Key


async def test_idempotency_key_replays_the_first_answer(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    headers = {**bearer(uuid.uuid4()), "Idempotency-Key": str(uuid.uuid4())}
    body = {"events": [event(object_id="7")]}

    first = await api.post("/api/v1/events", json=body, headers=headers)
    # Same request, keys in another order and other whitespace: still the same request.
    same = json.dumps(dict(reversed(list(body.items()))), indent=2)
    second = await api.post("/api/v1/events", content=same, headers={**headers, "content-type": "application/json"})

    assert first.status_code == second.status_code == 202
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert identity.routes["events"].call_count == 1
    assert await gateway_rows("idempotency_keys") == 1


async def test_sign_in_retried_with_its_key_gets_the_same_session(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    member_id = uuid.uuid4()
    logins = identity.post("/internal/logins").mock(return_value=login_answers(member_id))
    headers = {"Idempotency-Key": "login-attempt-1"}

    first = await api.post("/api/v1/sessions", json={"code": "once"}, headers=headers)
    again = await api.post("/api/v1/sessions", json={"code": "once"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json()["token"] == first.json()["token"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert logins.call_count == 1
    # The stored answer holds a bearer token: it is kept for minutes, not the store's 24 hours.
    conn = await asyncpg.connect(API_DB)
    try:
        kept = await conn.fetchval("SELECT expires_at - now() FROM idempotency_keys")
    finally:
        await conn.close()
    assert timedelta(minutes=4) < kept <= timedelta(minutes=5)


async def test_same_key_with_a_different_body_is_422(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    headers = {**bearer(uuid.uuid4()), "Idempotency-Key": "k-same"}
    assert (
        await api.post("/api/v1/events", json={"events": [event(object_id="1")]}, headers=headers)
    ).status_code == 202

    r = await api.post("/api/v1/events", json={"events": [event(object_id="2")]}, headers=headers)
    other_route = await api.post("/api/v1/me/phone", json={"code": "c"}, headers=headers)

    for refused in (r, other_route):
        assert refused.status_code == 422
        assert refused.json()["type"].endswith("/idempotency-key-reused")
    assert identity.routes["events"].call_count == 1
    assert identity.routes["phone"].call_count == 0


async def test_same_key_while_the_first_is_in_flight_is_409(api: httpx.AsyncClient, identity: respx.MockRouter) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_identity(request: httpx.Request, member_id: str) -> httpx.Response:
        entered.set()
        await release.wait()
        return httpx.Response(202, json={})

    identity.routes["events"].mock(side_effect=slow_identity)
    headers = {**bearer(uuid.uuid4()), "Idempotency-Key": "k-concurrent"}
    body = {"events": [event()]}

    first = asyncio.create_task(api.post("/api/v1/events", json=body, headers=headers))
    await asyncio.wait_for(entered.wait(), 5)
    duplicates = await asyncio.gather(*(api.post("/api/v1/events", json=body, headers=headers) for _ in range(3)))
    release.set()
    done = await first

    for r in duplicates:
        assert r.status_code == 409
        assert r.headers["Retry-After"] == "1"
        assert r.json()["type"].endswith("/idempotency-key-in-flight")
    assert done.status_code == 202
    after = await api.post("/api/v1/events", json=body, headers=headers)
    assert after.status_code == 202 and after.headers["Idempotent-Replayed"] == "true"
    assert identity.routes["events"].call_count == 1


async def test_a_failed_attempt_leaves_its_key_free_for_the_retry(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    identity.routes["events"].mock(side_effect=[problem(503, "unavailable", "busy"), httpx.Response(202, json={})])
    headers = {**bearer(uuid.uuid4()), "Idempotency-Key": "k-retry"}
    body = {"events": [event()]}

    failed = await api.post("/api/v1/events", json=body, headers=headers)
    assert failed.status_code == 503
    assert await gateway_rows("idempotency_keys") == 0

    retried = await api.post("/api/v1/events", json=body, headers=headers)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers


async def test_an_abandoned_claim_is_taken_over_after_its_lock(
    api: httpx.AsyncClient, identity: respx.MockRouter
) -> None:
    """A replica died mid-request and never released its claim: retries get 409 only until
    ``locked_until``, then the next retry takes the key over and runs."""
    member_id = uuid.uuid4()
    headers = {**bearer(member_id), "Idempotency-Key": "k-orphan"}
    body = {"events": [event()]}
    conn = await asyncpg.connect(API_DB)
    try:
        await conn.execute(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, owner, locked_until, expires_at) "
            "VALUES ($1, 'k-orphan', $2, 'in_flight', gen_random_uuid(), now() + interval '1 minute', "
            "now() + interval '1 day')",
            f"member:{member_id}",
            _hash_of(body),
        )
        assert (await api.post("/api/v1/events", json=body, headers=headers)).status_code == 409
        await conn.execute("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
        taken_over = await api.post("/api/v1/events", json=body, headers=headers)
        assert taken_over.status_code == 202 and "Idempotent-Replayed" not in taken_over.headers
        assert await conn.fetchval("SELECT status FROM idempotency_keys") == "done"
    finally:
        await conn.close()
    assert identity.routes["events"].call_count == 1


def _hash_of(body: dict[str, Any]) -> str:
    from services.gateway.idempotency.service import fingerprint
    from services.gateway.members.schemas import EventsRequest

    return fingerprint("POST", "/api/v1/events", EventsRequest.model_validate(body))


@pytest.mark.parametrize("key", ["", "x" * 256, "ключ", "a b"])
async def test_malformed_idempotency_key_is_400(api: httpx.AsyncClient, identity: respx.MockRouter, key: str) -> None:
    r = await api.post(
        "/api/v1/events",
        json={"events": [event()]},
        headers={**bearer(uuid.uuid4()), "Idempotency-Key": key.encode()},  # type: ignore[dict-item]
    )
    assert r.status_code == 400 and r.json()["type"].endswith("/invalid-idempotency-key")
    assert identity.calls.call_count == 0
    await assert_nothing_written()


# ---------------------------------------------------------------------------------------------
# the contract as published


async def test_openapi_documents_the_api_and_that_tier_and_points_are_null_only_when_commerce_cannot_answer(
    api: httpx.AsyncClient,
) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert {"/api/v1/sessions", "/api/v1/me", "/api/v1/me/phone", "/api/v1/events"} <= set(spec["paths"])
    me = spec["components"]["schemas"]["MeOut"]["properties"]
    assert "Null only when commerce could not answer" in me["tier"]["description"]
    assert "Null only when commerce could not answer" in me["points"]["description"]
    assert "application/problem+json" in spec["paths"]["/api/v1/sessions"]["post"]["responses"]["401"]["content"]
