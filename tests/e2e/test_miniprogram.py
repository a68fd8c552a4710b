"""Flow 2, through real processes: a follower opens the mini-program, signs in and is the same member.

sandbox user → follows the service account → ``wx.login`` code → gateway ``POST /api/v1/sessions``
→ identity ``jscode2session`` (the sandbox) → the gateway's own token → ``GET /api/v1/me`` shows
one member known to both apps, following the service account. WeChat's refusals are injected with
the sandbox's faults and must come out of the gateway as the contract says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

OA = "wx0000000000000001"
MP = "wx0000000000000002"


@pytest.fixture(scope="module")
async def live(stack: Stack) -> Stack:
    paths = (await stack.client("identity").get("/openapi.json")).json()["paths"]
    if "/internal/logins" not in paths:
        pytest.skip("identity's POST /internal/logins has not landed yet")
    return stack


async def _user(sandbox: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    user: dict[str, Any] = (await sandbox.post("/sandbox/users", json={"nickname": "Li", **body})).json()
    return user


async def _code(sandbox: httpx.AsyncClient, user: dict[str, Any]) -> str:
    code: str = (await sandbox.post(f"/sandbox/users/{user['user_id']}/login-code", json={"appid": MP})).json()["code"]
    return code


async def test_follower_signs_in_to_the_mini_program_as_the_same_member(live: Stack) -> None:
    sandbox, gateway = live.client("sandbox"), live.client("gateway")
    user = await _user(sandbox, phone="13800001234")
    followed = await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", json={"appid": OA, "scene": "mp_e2e"})
    assert followed.json()["status"] == 200

    code = await _code(sandbox, user)
    r = await gateway.post("/api/v1/sessions", json={"code": code})
    assert r.status_code == 201, r.text
    session = r.json()
    auth = {"Authorization": f"Bearer {session['token']}"}

    async def me_following() -> dict[str, Any] | None:
        me = await gateway.get("/api/v1/me", headers=auth)
        assert me.status_code == 200, me.text
        body: dict[str, Any] = me.json()
        return body if body["service_account"]["following"] else None

    me = await eventually(me_following)
    assert me["member_id"] == session["member_id"]
    assert me["unionid_known"] is True
    assert {a["appid"] for a in me["linked_apps"]} == {OA, MP}
    assert me["service_account"] == {"appid": OA, "following": True}
    # A new member sits at the base tier with no points yet (commerce answers beside identity).
    assert me["tier"] == "base" and me["points"] == {"available": 0, "pending": 0, "expiring": []}

    # The code was single use.
    reused = await gateway.post("/api/v1/sessions", json={"code": code})
    assert reused.status_code == 401 and reused.json()["type"].endswith("/invalid-code")

    # Phone binding and behaviour events reach identity for this member only.
    phone_code = (await sandbox.post(f"/sandbox/users/{user['user_id']}/phone-code", json={"appid": MP})).json()["code"]
    bound = await gateway.post("/api/v1/me/phone", json={"code": phone_code}, headers=auth)
    assert bound.status_code == 200, bound.text
    assert bound.json()["bound"] is True and "1234" in bound.json()["phone_masked"]
    now = datetime.now(UTC).isoformat()
    events = {"events": [{"type": "product_view", "object_id": "1000000000000000001", "occurred_at": now}]}
    sent = await gateway.post("/api/v1/events", json=events, headers={**auth, "Idempotency-Key": "e2e-events-1"})
    assert sent.status_code == 202, sent.text
    again = await gateway.post("/api/v1/events", json=events, headers={**auth, "Idempotency-Key": "e2e-events-1"})
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert (await gateway.get("/api/v1/me", headers=auth)).json()["phone_masked"] == bound.json()["phone_masked"]


@pytest.mark.parametrize(
    ("errcode", "status", "slug"),
    [(40029, 401, "invalid-code"), (40226, 403, "login-blocked"), (45011, 503, "dependency-unavailable")],
)
async def test_wechat_refusing_the_code_comes_out_as_the_contract_says(
    live: Stack, errcode: int, status: int, slug: str
) -> None:
    sandbox, gateway = live.client("sandbox"), live.client("gateway")
    user = await _user(sandbox)
    code = await _code(sandbox, user)
    await sandbox.post(
        "/sandbox/faults", json={"path": "/sns/jscode2session", "errcode": errcode, "errmsg": "injected"}
    )
    try:
        r = await gateway.post("/api/v1/sessions", json={"code": code})
    finally:
        await sandbox.delete("/sandbox/faults")
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(f"/{slug}")
    if status == 503:
        assert r.headers["Retry-After"].isdigit()


async def test_a_token_from_elsewhere_is_refused(live: Stack) -> None:
    gateway = live.client("gateway")
    r = await gateway.get("/api/v1/me", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
    assert r.status_code == 401 and r.json()["type"].endswith("/invalid-session")
