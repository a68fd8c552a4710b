"""Flow 1, through real processes: a QR-scene follow becomes a member with its unionid and scene."""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import db_url
from tests.e2e.conftest import Stack
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

OA = "wx0000000000000001"


async def _count(service: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(db_url(service))
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def test_qr_follow_becomes_one_member_even_when_pushed_three_times(stack: Stack) -> None:
    sandbox = stack.client("sandbox")
    identity = stack.client("identity", internal=True)
    user = (await sandbox.post("/sandbox/users", json={"nickname": "Wang"})).json()
    openid = user["openids"][OA]

    answer = (
        await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", json={"appid": OA, "scene": "store_42"})
    ).json()
    # The gateway answered with notify's welcome for this scene, encrypted; the sandbox decrypted it.
    assert answer["status"] == 200 and "42 号门店" in answer["body"], answer

    # WeChat re-delivers the identical push (same CreateTime, same event) twice more.
    first = next(
        p for p in (await sandbox.get("/sandbox/pushes", params={"appid": OA})).json() if p["FromUserName"] == openid
    )
    answers = (await sandbox.post("/sandbox/push", json={"appid": OA, "payload": first["payload"], "repeat": 2})).json()
    assert [a["status"] for a in answers] == [200, 200]
    assert all(a["body"] == "success" for a in answers)  # duplicates: acknowledged, no second welcome

    async def member() -> dict[str, object] | None:
        r = await identity.post("/internal/resolve", json={"appid": OA, "openid": openid})
        return r.json() if r.status_code == 200 else None

    found = await eventually(member, what="identity to know the follower")
    assert found["unionid_known"] is True
    assert found["first_scene"] == "store_42"
    assert [i["appid"] for i in found["identities"]] == [OA]
    assert found["follows"][0]["subscribed"] is True

    # Exactly one stored push, one wechat.oa.subscribe, one member, one member.registered.
    assert (
        await _count("gateway", "SELECT count(*) FROM inbound_pushes WHERE payload->>'FromUserName' = $1", openid) == 1
    )
    assert (
        await _count(
            "gateway",
            "SELECT count(*) FROM outbox WHERE type = 'wechat.oa.subscribe' AND convert_from(body, 'UTF8') LIKE $1",
            f"%{openid}%",
        )
        == 1
    )
    assert await _count("identity", "SELECT count(*) FROM app_identities WHERE openid = $1", openid) == 1

    async def registered() -> int:
        return await _count(
            "identity",
            "SELECT count(*) FROM outbox WHERE type = 'identity.member.registered' AND convert_from(body, 'UTF8') LIKE $1",
            f"%{openid}%",
        )

    assert await eventually(registered, what="identity.member.registered in the outbox") == 1


async def test_unsigned_push_is_rejected_and_nothing_is_stored(stack: Stack) -> None:
    gateway = stack.client("gateway")
    before = await _count("gateway", "SELECT count(*) FROM inbound_pushes")
    r = await gateway.post(f"/wechat/callbacks/{OA}", content=b"<xml><ToUserName>x</ToUserName></xml>")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await _count("gateway", "SELECT count(*) FROM inbound_pushes") == before


async def test_replies_come_from_notifys_rules_and_the_points_reply_is_the_real_balance(stack: Stack) -> None:
    """Fixed replies are the gateway's (from notify's published rules); the points keyword needs
    commerce's data: the real balance (commerce asks identity who the openid is), answered at once
    when it comes within the reply budget, or promised and sent as a customer-service message."""
    sandbox = stack.client("sandbox")
    identity = stack.client("identity", internal=True)
    user = (await sandbox.post("/sandbox/users", json={})).json()
    uid = user["user_id"]
    await sandbox.post(f"/sandbox/users/{uid}/follow", json={"appid": OA})

    async def member() -> bool:
        r = await identity.post("/internal/resolve", json={"appid": OA, "openid": user["openids"][OA]})
        return r.status_code == 200

    await eventually(member, what="identity to know the follower")

    async def help_answered() -> dict[str, object] | None:
        # notify publishes its rules at start; the gateway serves them once its copy is current.
        answer = (await sandbox.post(f"/sandbox/users/{uid}/messages", json={"appid": OA, "text": "help"})).json()
        return answer if "客服" in answer["body"] else None

    await eventually(help_answered, what="the gateway serving notify's rules")
    click = (await sandbox.post(f"/sandbox/users/{uid}/menu-click", json={"appid": OA, "key": "MEMBER_CENTER"})).json()
    assert "会员中心" in click["body"]

    text = (await sandbox.post(f"/sandbox/users/{uid}/messages", json={"appid": OA, "text": "我的积分]]>"})).json()
    assert text["status"] == 200 and "reply_error" not in text

    async def followed_up() -> list[dict[str, object]]:
        inbox = (await sandbox.get(f"/sandbox/users/{uid}/inbox")).json()
        return [m for m in inbox if m["kind"] == "customer_service"]

    if "正在查询你的积分，一会儿发给你。" in text["body"]:
        [message] = await eventually(followed_up, what="notify's customer-service message")
        content = str(message["content"])
    else:
        content = str(text["body"])
    # A new member's real balance, never the fallback for strangers nor a placeholder.
    assert "你的可用积分：0 分（待生效 0 分）" in content, content
