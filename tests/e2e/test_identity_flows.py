"""Flows 1 and 2 through real processes: the sandbox pushes follows to the gateway, identity consumes
them from RabbitMQ, and logins go to identity's ``/internal/logins`` directly (the gateway's
mini-program API calls the same endpoint)."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import db_url
from tests.e2e.conftest import Stack
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

OA = "wx0000000000000001"
MP = "wx0000000000000002"


async def _rows(sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url("identity"))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _resolve(identity: httpx.AsyncClient, appid: str, openid: str) -> dict[str, Any] | None:
    r = await identity.post("/internal/resolve", json={"appid": appid, "openid": openid})
    return r.json() if r.status_code == 200 else None


async def _login(sandbox: httpx.AsyncClient, identity: httpx.AsyncClient, user: dict[str, Any]) -> dict[str, Any]:
    code = (await sandbox.post(f"/sandbox/users/{user['user_id']}/login-code", json={"appid": MP})).json()["code"]
    r = await identity.post("/internal/logins", json={"appid": MP, "code": code})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _follow(sandbox: httpx.AsyncClient, user: dict[str, Any], scene: str | None = None) -> None:
    answer = (await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", json={"appid": OA, "scene": scene})).json()
    assert answer["status"] == 200, answer


async def test_follow_then_login_is_one_member(stack: Stack) -> None:
    sandbox, identity = stack.client("sandbox"), stack.client("identity", internal=True)
    user = (await sandbox.post("/sandbox/users", json={"nickname": "Li"})).json()
    await _follow(sandbox, user, "store_9")
    follower = await eventually(lambda: _resolve(identity, OA, user["openids"][OA]))

    login = await _login(sandbox, identity, user)

    assert login["member_id"] == follower["member_id"]
    assert login["created"] is False and login["unionid_known"] is True
    member = (await identity.get(f"/internal/members/{login['member_id']}")).json()
    assert sorted(i["appid"] for i in member["identities"]) == [OA, MP]
    assert member["first_scene"] == "store_9"
    assert "follower" in member["tags"]


async def test_login_then_follow_is_one_member(stack: Stack) -> None:
    sandbox, identity = stack.client("sandbox"), stack.client("identity", internal=True)
    user = (await sandbox.post("/sandbox/users", json={"nickname": "Zhao"})).json()
    login = await _login(sandbox, identity, user)
    assert login["created"] is True

    await _follow(sandbox, user, "poster_1")

    async def linked() -> dict[str, Any] | None:
        found = await _resolve(identity, OA, user["openids"][OA])
        return found if found and len(found["identities"]) == 2 else None

    member = await eventually(linked)
    assert member["member_id"] == login["member_id"]
    assert member["follows"][0]["first_scene"] == "poster_1"


async def test_a_late_unionid_merges_two_members_through_the_stack(stack: Stack) -> None:
    sandbox, identity = stack.client("sandbox"), stack.client("identity", internal=True)
    user = (await sandbox.post("/sandbox/users", json={"unionid_bound": False})).json()
    await _follow(sandbox, user, "store_2")
    follower = await eventually(lambda: _resolve(identity, OA, user["openids"][OA]))
    first_login = await _login(sandbox, identity, user)
    assert first_login["member_id"] != follower["member_id"]

    await sandbox.post(f"/sandbox/users/{user['user_id']}/bind-unionid", json={})
    assert (await _login(sandbox, identity, user))["unionid_known"] is True
    await _follow(sandbox, user, "counter_5")  # SCAN: user/info now tells the gateway-fed consumer the unionid

    async def merged() -> dict[str, Any] | None:
        found = (await identity.get(f"/internal/members/{first_login['member_id']}")).json()
        return found if found.get("resolved_from") else None

    survivor = await eventually(merged)
    assert survivor["member_id"] == follower["member_id"]
    assert sorted(i["appid"] for i in survivor["identities"]) == [OA, MP]
    assert (await _login(sandbox, identity, user))["member_id"] == follower["member_id"]
    events = await _rows(
        "SELECT count(*) AS n FROM outbox WHERE type = 'identity.member.merged' AND convert_from(body, 'UTF8') LIKE $1",
        f"%{first_login['member_id']}%",
    )
    assert events[0]["n"] == 1


async def test_phone_binding_through_the_sandbox(stack: Stack) -> None:
    sandbox, identity = stack.client("sandbox"), stack.client("identity", internal=True)
    user = (await sandbox.post("/sandbox/users", json={"phone": "13700001234"})).json()
    member_id = (await _login(sandbox, identity, user))["member_id"]
    code = (await sandbox.post(f"/sandbox/users/{user['user_id']}/phone-code", json={"appid": MP})).json()["code"]
    r = await identity.post(f"/internal/members/{member_id}/phone", json={"appid": MP, "code": code})
    assert r.status_code == 200, r.text
    assert r.json() == {"phone_masked": "137****1234", "country_code": "86", "bound": True}
