"""The sandbox's messaging side: the customer-service window, mini-program JSON pushes, and WeChat
Shop pushes (retry schedule) and synchronous member callbacks.

wechatpy stays the independent oracle for signatures and encryption.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx
import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import check_signature

from tests.integration.test_sandbox import MP, OA, SHOP, T0, callbacks, query
from tests.integration.test_sandbox_identity import MP_XML, Harness, gateway, oid, sb

__all__ = ["gateway", "sb"]  # fixtures shared with test_sandbox_identity

SEND = "/cgi-bin/message/custom/send"


def text(user: dict[str, Any], content: str = "hi", app: dict[str, str] = OA) -> dict[str, Any]:
    return {"touser": oid(user, app), "msgtype": "text", "text": {"content": content}}


async def say(sb: Harness, user: dict[str, Any], app: dict[str, str] = OA, words: str = "hello") -> None:
    await sb.control(user, "messages", {"appid": app["appid"], "text": words})


def decrypt_json(request: httpx.Request, app: dict[str, str]) -> dict[str, Any]:
    q = query(request)
    check_signature(app["token"], q["signature"], q["timestamp"], q["nonce"])
    assert q["encrypt_type"] == "aes"
    crypto = WeChatCrypto(app["token"], app["encoding_aes_key"], app["appid"])
    body = json.loads(request.content)
    return json.loads(crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"]))  # type: ignore[no-any-return]


def encrypted_json_reply(app: dict[str, str], answer: dict[str, Any], timestamp: str) -> str:
    """An encrypted JSON passive reply, made with wechatpy (its XML envelope, re-shaped as JSON)."""
    crypto = WeChatCrypto(app["token"], app["encoding_aes_key"], app["appid"])
    envelope = xmltodict.parse(crypto.encrypt_message(json.dumps(answer), "246810", timestamp))["xml"]
    return json.dumps({k: envelope[k] for k in ("Encrypt", "MsgSignature", "TimeStamp", "Nonce")})


# -- the customer-service window -------------------------------------------------------------------


async def test_a_user_message_opens_five_messages_for_48_hours(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower()
    sb.clock.advance(3600)  # the follow grant (3 / 1 min) has lapsed
    assert await sb.wx(SEND, text(user)) == {
        "errcode": 45015,
        "errmsg": "response out of time limit or subscription is canceled",
    }
    await say(sb, user)
    for i in range(5):
        assert await sb.wx(SEND, text(user, f"reply {i}")) == {"errcode": 0, "errmsg": "ok"}
    assert await sb.wx(SEND, text(user, "one too many")) == {"errcode": 45047, "errmsg": "out of response count limit"}
    inbox = await sb.get(f"/sandbox/users/{user['user_id']}/inbox")
    assert [m["content"] for m in inbox] == [f"reply {i}" for i in range(5)]
    assert inbox[0] == {
        "seq": 1,
        "delivered_at": int(T0) + 3600,
        "appid": OA["appid"],
        "kind": "customer_service",
        "msgtype": "text",
        "content": "reply 0",
        "data": {"content": "reply 0"},
        "jump": {},
        "kf_account": None,
        "window": "message",
        "opened_at": None,
        "opens": 0,
    }
    # The next message from the user renews the quota (it does not add up) and the 48 hours.
    sb.clock.advance(47 * 3600)
    await say(sb, user)
    sb.clock.advance(48 * 3600 - 1)
    window = await sb.get(f"/sandbox/users/{user['user_id']}/service-window", appid=OA["appid"])
    assert window == [
        {"scene": "message", "opened_at": int(sb.clock()) - 48 * 3600 + 1, "expires_in": 1, "quota": 5, "used": 0}
    ]
    for _ in range(5):
        assert (await sb.wx(SEND, text(user)))["errcode"] == 0
    assert (await sb.wx(SEND, text(user)))["errcode"] == 45047
    sb.clock.advance(1)
    assert (await sb.wx(SEND, text(user)))["errcode"] == 45015


async def test_follow_scan_and_menu_click_open_three_messages_for_a_minute(
    sb: Harness, gateway: respx.MockRouter
) -> None:
    user = await sb.follower()
    for _ in range(3):
        assert (await sb.wx(SEND, text(user)))["errcode"] == 0
    assert (await sb.wx(SEND, text(user)))["errcode"] == 45047
    sb.clock.advance(60)
    assert (await sb.wx(SEND, text(user)))["errcode"] == 45015

    await sb.control(user, "follow", {"appid": OA["appid"], "scene": "store-9"})  # SCAN
    await sb.control(user, "menu-click", {"appid": OA["appid"], "key": "HELP"})
    grants = await sb.get(f"/sandbox/users/{user['user_id']}/service-window", appid=OA["appid"])
    assert sorted(g["scene"] for g in grants) == ["menu_click", "scan"]
    for _ in range(6):  # two grants of three
        assert (await sb.wx(SEND, text(user)))["errcode"] == 0
    assert (await sb.wx(SEND, text(user)))["errcode"] == 45047
    inbox = await sb.get(f"/sandbox/users/{user['user_id']}/inbox")
    assert [m["window"] for m in inbox] == ["follow"] * 3 + ["scan"] * 3 + ["menu_click"] * 3


async def test_a_message_uses_the_grant_that_expires_first(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower()  # follow: 3 for 1 minute
    await say(sb, user)  # message: 5 for 48 hours
    for _ in range(3):
        await sb.wx(SEND, text(user))
    inbox = await sb.get(f"/sandbox/users/{user['user_id']}/inbox")
    assert {m["window"] for m in inbox} == {"follow"}
    sb.clock.advance(60)
    for _ in range(5):
        assert (await sb.wx(SEND, text(user)))["errcode"] == 0
    assert (await sb.wx(SEND, text(user)))["errcode"] == 45047


async def test_unfollowing_closes_the_window(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower()
    await say(sb, user)
    await sb.control(user, "unfollow", {"appid": OA["appid"]})
    assert (await sb.wx(SEND, text(user)))["errcode"] == 45015
    assert await sb.get(f"/sandbox/users/{user['user_id']}/inbox") == []


@pytest.mark.parametrize(
    ("message", "errcode"),
    [
        ({"msgtype": "text", "text": {"content": ""}}, 44004),
        ({"msgtype": "text"}, 47001),
        ({"msgtype": "image", "image": {}}, 40007),
        ({"msgtype": "carrier-pigeon", "text": {"content": "x"}}, 40008),
        ({"msgtype": "link", "link": {"title": "t", "url": "https://x.test"}}, 40008),  # mini-program only
        ({"msgtype": "news", "news": {"articles": []}}, 44003),
        ({"msgtype": "news", "news": {"articles": [{"title": "a"}, {"title": "b"}]}}, 45008),
        (
            {"msgtype": "miniprogrampage", "miniprogrampage": {"title": "t", "pagepath": "p", "thumb_media_id": "m"}},
            47001,
        ),
    ],
)
async def test_customer_service_bodies_are_checked(
    sb: Harness, gateway: respx.MockRouter, message: dict[str, Any], errcode: int
) -> None:
    user = await sb.follower()
    await say(sb, user)
    assert (await sb.wx(SEND, {"touser": oid(user), **message}))["errcode"] == errcode
    assert await sb.get(f"/sandbox/users/{user['user_id']}/inbox") == []


async def test_news_and_mini_program_cards_record_their_jump_target(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower()
    await say(sb, user)
    article = {"title": "Spring sale", "description": "d", "url": "https://brand.test/sale", "picurl": "https://p"}
    card = {"title": "Points", "appid": MP["appid"], "pagepath": "pages/points/index", "thumb_media_id": "M1"}
    for msg in (
        {"msgtype": "news", "news": {"articles": [article]}},
        {"msgtype": "miniprogrampage", "miniprogrampage": card, "customservice": {"kf_account": "a@brand"}},
        {"msgtype": "image", "image": {"media_id": "MEDIA"}},
    ):
        assert (await sb.wx(SEND, {"touser": oid(user), **msg}))["errcode"] == 0
    news, page, image = await sb.get(f"/sandbox/users/{user['user_id']}/inbox")
    assert (news["msgtype"], news["content"], news["jump"]) == (
        "news",
        {"articles": [article]},
        {"url": article["url"]},
    )
    assert page["jump"] == {"miniprogram": {"appid": MP["appid"], "pagepath": "pages/points/index"}}
    assert page["kf_account"] == "a@brand"
    assert (image["content"], image["jump"]) == ({"media_id": "MEDIA"}, {})


async def test_customer_service_checks_the_recipient_and_the_token(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower()
    await say(sb, user)
    assert (await sb.wx(SEND, {**text(user), "touser": "o" + "x" * 27}))["errcode"] == 40003
    assert (await sb.wx(SEND, {**text(user), "touser": oid(user, MP)}))["errcode"] == 40003  # the MP's openid
    assert (await sb.wx(SEND, text(user), SHOP))["errcode"] == 48001
    r = await sb.http.post(SEND, params={"access_token": await sb.token()}, content=b"not json")
    assert r.json()["errcode"] == 47001


async def test_mini_program_customer_service(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()
    assert (await sb.wx(SEND, text(user, app=MP), MP))["errcode"] == 45015
    await say(sb, user, MP)
    link = {"title": "Order", "description": "d", "url": "https://brand.test/o/1", "thumb_url": "https://t"}
    card = {"title": "Points", "pagepath": "pages/points/index", "thumb_media_id": "M1"}
    assert (await sb.wx(SEND, {"touser": oid(user, MP), "msgtype": "link", "link": link}, MP))["errcode"] == 0
    page = {"touser": oid(user, MP), "msgtype": "miniprogrampage", "miniprogrampage": card}
    assert (await sb.wx(SEND, page, MP))["errcode"] == 0
    assert (await sb.wx(SEND, {**text(user, app=MP), "msgtype": "news"}, MP))["errcode"] == 40008
    inbox = await sb.get(f"/sandbox/users/{user['user_id']}/inbox")
    assert [(m["appid"], m["jump"]) for m in inbox] == [
        (MP["appid"], {"url": link["url"]}),
        (MP["appid"], {"miniprogram": {"appid": MP["appid"], "pagepath": "pages/points/index"}}),
    ]


# -- mini-program pushes in JSON ------------------------------------------------------------------


async def test_mini_program_json_push_in_safe_mode_with_an_encrypted_json_reply(
    sb: Harness, gateway: respx.MockRouter
) -> None:
    answer = {"ToUserName": "o", "FromUserName": MP["original_id"], "MsgType": "transfer_customer_service"}

    def reply(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/json"
        assert set(json.loads(request.content)) == {"ToUserName", "Encrypt"}
        push = decrypt_json(request, MP)
        assert (push["MsgType"], push["Content"], push["CreateTime"]) == ("text", '你好 "quoted"', int(T0))
        return httpx.Response(200, text=encrypted_json_reply(MP, answer, query(request)["timestamp"]))

    callbacks(gateway, MP).side_effect = reply
    user = await sb.user()
    outcome = await sb.control(user, "messages", {"appid": MP["appid"], "text": '你好 "quoted"'})
    assert outcome["status"] == 200
    assert "reply_error" not in outcome
    assert json.loads(outcome["body"]) == answer


async def test_mini_program_json_push_modes(sb: Harness, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, MP, *[httpx.Response(200, text="success")] * 2, httpx.Response(200, text='{"a":1}'))
    payload = {"FromUserName": "oJSON", "MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": "x"}
    await sb.post("/sandbox/push", {"appid": MP["appid"], "payload": payload, "mode": "compat"})
    compat = route.calls.last.request
    clear = json.loads(compat.content)
    assert (clear["Event"], clear["SessionFrom"]) == ("user_enter_tempsession", "x")
    assert decrypt_json(compat, MP)["SessionFrom"] == "x"
    await sb.post("/sandbox/push", {"appid": MP["appid"], "payload": payload, "mode": "plain"})
    assert json.loads(route.calls.last.request.content)["ToUserName"] == MP["original_id"]
    safe = await sb.post("/sandbox/push", {"appid": MP["appid"], "payload": payload})
    assert "plaintext reply" in safe[0]["reply_error"]  # a safe-mode push wants an encrypted reply


# -- WeChat Shop pushes ---------------------------------------------------------------------------


async def test_shop_push_is_signed_encrypted_json_from_the_buyers_shop_openid(
    sb: Harness, gateway: respx.MockRouter
) -> None:
    route = callbacks(gateway, SHOP)
    user = await sb.user()
    attempts = await sb.post("/sandbox/shop/push", {"event": "channels_ec_order_pay", "user_id": user["user_id"]})
    assert attempts == [{"attempt": 1, "offset_s": 0.0, "status": 200, "body": "success", "acknowledged": True}]
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json"
    assert set(json.loads(request.content)) == {"ToUserName", "Encrypt"}
    push = decrypt_json(request, SHOP)
    assert push["ToUserName"] == SHOP["original_id"]
    assert push["FromUserName"] == oid(user, SHOP) == query(request)["openid"]
    assert (push["MsgType"], push["Event"], push["CreateTime"]) == ("event", "channels_ec_order_pay", int(T0))
    order = push["order_info"]
    assert isinstance(order["order_id"], int)
    assert len(str(order["order_id"])) == 19
    assert order["pay_time"] == int(T0)
    log = (await sb.get("/sandbox/pushes", appid=SHOP["appid"]))[-1]
    assert (log["Event"], log["mode"], log["statuses"]) == ("channels_ec_order_pay", "safe", [200])


async def test_shop_push_payload_overrides_and_the_system_openid(sb: Harness, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, SHOP)
    body = {"event": "channels_ec_order_cancel", "payload": {"order_info": {"order_id": "3705115058471208928"}}}
    await sb.post("/sandbox/shop/push", body)
    first = decrypt_json(route.calls.last.request, SHOP)
    assert first["order_info"] == {"order_id": "3705115058471208928", "cancel_type": 1}
    await sb.post("/sandbox/shop/push", {"event": "product_spu_audit", "payload": {"ProductSpuAudit": {"status": 3}}})
    audit = decrypt_json(route.calls.last.request, SHOP)
    assert audit["ProductSpuAudit"] == {"status": 3}
    assert audit["FromUserName"] == first["FromUserName"]  # the shop's fixed openid, not a buyer's
    assert audit["FromUserName"].startswith("o")
    assert len(audit["FromUserName"]) == 28
    r = await sb.http.post("/sandbox/shop/push", json={"event": "x", "appid": OA["appid"]})
    assert r.status_code == 400


async def test_shop_retries_byte_identically_until_acknowledged(sb: Harness, gateway: respx.MockRouter) -> None:
    route = callbacks(
        gateway,
        SHOP,
        httpx.Response(503),
        httpx.ReadTimeout("no answer within 5 s"),
        httpx.Response(200, text="<xml>not an ack</xml>"),
        httpx.Response(200, text=""),
    )
    user = await sb.user()
    body = {"event": "channels_ec_order_new", "user_id": user["user_id"], "retry_schedule": True, "time_scale": 0}
    attempts = await sb.post("/sandbox/shop/push", body)
    assert [(a["attempt"], a["offset_s"], a["status"], a["acknowledged"]) for a in attempts] == [
        (1, 0.0, 503, False),
        (2, 0.0, None, False),
        (3, 0.0, 200, False),
        (4, 10.0, 200, True),
    ]
    assert attempts[1]["error"].startswith("ReadTimeout")
    sent = [call.request for call in route.calls]
    assert len({(str(r.url), r.content) for r in sent}) == 1  # same timestamp, nonce, signature, body
    log = (await sb.get("/sandbox/pushes", appid=SHOP["appid"]))[-1]
    assert (log["attempts"], log["statuses"]) == (4, [503, None, 200, 200])


async def test_shop_gives_up_after_ten_pushes_on_the_compressed_schedule(
    sb: Harness, gateway: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(sb.app.state.pusher, "sleep", no_sleep)
    route = gateway.post(f"/wechat/callbacks/{SHOP['appid']}")
    route.return_value = httpx.Response(500)
    body = {"event": "channels_ec_order_pay", "retry_schedule": True, "time_scale": 0.001}
    attempts = await sb.post("/sandbox/shop/push", body)
    assert route.call_count == len(attempts) == 10
    assert [a["offset_s"] for a in attempts] == [0, 0, 0, 10, 70, 370, 2170, 5770, 9370, 12970]  # ~3.6 h
    assert waits == pytest.approx([0.01, 0.06, 0.3, 1.8, 3.6, 3.6, 3.6])  # the 0 s waits do not sleep
    assert not any(a["acknowledged"] for a in attempts)


async def test_shop_schedule_really_waits_scaled_time(sb: Harness, gateway: respx.MockRouter) -> None:
    callbacks(gateway, SHOP, *[httpx.Response(503)] * 4, httpx.Response(200, text="success"))
    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    body = {"event": "channels_ec_order_pay", "retry_schedule": True, "time_scale": 0.0005}
    attempts = await sb.post("/sandbox/shop/push", body)
    elapsed = loop_time() - started
    assert [a["offset_s"] for a in attempts] == [0, 0, 0, 10, 70]
    assert 0.035 <= elapsed < 2  # 70 s × 0.0005 = 35 ms of waiting


async def test_shop_push_without_the_schedule_is_sent_once(sb: Harness, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, SHOP, httpx.Response(503), httpx.Response(200, text="success"))
    attempts = await sb.post("/sandbox/shop/push", {"event": "channels_ec_order_pay"})
    assert [(a["status"], a["acknowledged"]) for a in attempts] == [(503, False)]
    assert route.call_count == 1


# -- synchronous shop → mini-program callbacks ------------------------------------------------------


async def test_vip_user_info_get_goes_to_the_mini_program_and_returns_its_answer(
    sb: Harness, gateway: respx.MockRouter
) -> None:
    answer = {"errcode": 0, "errmsg": "ok", "info": {"is_vip": True, "identity": "Lv.1", "outer_userid": "M-42"}}
    seen: list[dict[str, Any]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(decrypt_json(request, MP))
        return httpx.Response(200, text=encrypted_json_reply(MP, answer, query(request)["timestamp"]))

    callbacks(gateway, MP).side_effect = reply
    user = await sb.user()
    out = await sb.post(
        "/sandbox/shop/callback", {"event": "channels_ec_vip_user_info_get", "user_id": user["user_id"]}
    )
    assert (out["status"], out["answer"], out["encrypted"]) == (200, answer, True)
    assert "reply_error" not in out
    assert seen == [
        {
            "ToUserName": MP["original_id"],
            "FromUserName": oid(user, MP),
            "CreateTime": int(T0),
            "MsgType": "event",
            "Event": "channels_ec_vip_user_info_get",
            "info": {"shop_appid": SHOP["appid"]},
        }
    ]


async def test_vip_discount_callback_with_payload_and_a_plaintext_answer(
    sb: Harness, gateway: respx.MockRouter
) -> None:
    route = callbacks(gateway, MP, httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "result": 1}))
    user = await sb.user()
    order = {"order_session_id": "S1", "unique_id": "U1", "scene": 1}
    body = {"event": "channels_ec_order_use_vip_discount", "user_id": user["user_id"], "payload": {"order_info": order}}
    out = await sb.post("/sandbox/shop/callback", body)
    assert out["answer"] == {"errcode": 0, "errmsg": "ok", "result": 1}
    assert out["encrypted"] is False
    assert "plaintext reply" in out["reply_error"]
    assert decrypt_json(route.calls.last.request, MP)["order_info"] == {"shop_appid": SHOP["appid"], **order}


async def test_callback_to_an_xml_mini_program(sb: Harness, gateway: respx.MockRouter) -> None:
    crypto = WeChatCrypto(MP_XML["token"], MP_XML["encoding_aes_key"], MP_XML["appid"])

    def reply(request: httpx.Request) -> httpx.Response:
        q = query(request)
        plain = crypto.decrypt_message(request.content, q["msg_signature"], q["timestamp"], q["nonce"])
        push = xmltodict.parse(plain)["xml"]
        assert push["info"] == {"shop_appid": SHOP["appid"]}
        answer = "<xml><errcode>0</errcode><errmsg>ok</errmsg><info><is_vip>false</is_vip></info></xml>"
        return httpx.Response(200, text=crypto.encrypt_message(answer, "1357", q["timestamp"]))

    callbacks(gateway, MP_XML).side_effect = reply
    user = await sb.user()
    body = {"event": "channels_ec_vip_user_info_get", "user_id": user["user_id"], "appid": MP_XML["appid"]}
    out = await sb.post("/sandbox/shop/callback", body)
    assert out["answer"] == {"errcode": "0", "errmsg": "ok", "info": {"is_vip": "false"}}
    assert out["encrypted"] is True


async def test_callback_when_the_gateway_is_down(sb: Harness, gateway: respx.MockRouter) -> None:
    callbacks(gateway, MP, httpx.ConnectError("refused"))
    user = await sb.user()
    out = await sb.post(
        "/sandbox/shop/callback", {"event": "channels_ec_vip_user_info_get", "user_id": user["user_id"]}
    )
    assert (out["status"], out["answer"]) == (None, None)
    assert out["error"].startswith("ConnectError")
    r = await sb.http.post("/sandbox/shop/callback", json={"event": "x", "user_id": "u9999"})
    assert r.status_code == 404
