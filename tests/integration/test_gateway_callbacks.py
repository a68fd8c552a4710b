"""The WeChat edge: every push verified, decoded, stored once and published once; bad input writes nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from services.gateway.app import create_app
from services.gateway.deps import GatewayDeps
from shared.wechat.crypto import MessageCrypto, sign
from tests.integration.gateway_fixtures import (
    MP,
    OA,
    OLD_KEY,
    SHOP,
    Gateway,
    db_count,
    dev_rules,
    drain,
    eventually,
    gateway_settings,
    publish_rules,
    text_message,
    written,
)

pytestmark = pytest.mark.integration

OPENID = "oUserOpenid000000000000000001"


def subscribe(openid: str = OPENID, scene: str | None = "store_42", t: int | None = None) -> dict[str, object]:
    payload: dict[str, object] = {
        "ToUserName": "gh_000000000001",
        "FromUserName": openid,
        "CreateTime": t or int(time.time()),
        "MsgType": "event",
        "Event": "subscribe",
    }
    if scene:
        payload |= {"EventKey": f"qrscene_{scene}", "Ticket": "TICKET"}
    return payload


# ---------------------------------------------------------------------------------------------- accepted


async def test_handshake_echoes_echostr_and_refuses_a_bad_signature(gateway: Gateway) -> None:
    q = gateway.wechat.query(OA) | {"echostr": "4375120948345356249"}
    r = await gateway.client.get(f"/wechat/callbacks/{OA}", params=q)
    assert (r.status_code, r.text) == (200, "4375120948345356249")
    bad = q | {"signature": "0" * 40}
    assert (await gateway.client.get(f"/wechat/callbacks/{OA}", params=bad)).status_code == 401


async def test_push_encrypted_by_wechatpy_is_accepted_and_published_once(gateway: Gateway, event_probe) -> None:
    app = gateway.wechat.apps[OA]
    ts, nonce = str(int(time.time())), "998877"
    enc = WeChatCrypto(app["token"], app["encoding_aes_key"], OA).encrypt_message(
        xmltodict.unparse({"xml": text_message(OPENID, "hello")}, full_document=False), nonce, ts
    )
    env = xmltodict.parse(enc)["xml"]
    body = f"<xml><ToUserName><![CDATA[gh_000000000001]]></ToUserName><Encrypt><![CDATA[{env['Encrypt']}]]></Encrypt></xml>"
    q = gateway.wechat.query(OA, ts=ts, nonce=nonce) | {"encrypt_type": "aes", "msg_signature": env["MsgSignature"]}
    r = await gateway.push(OA, q, body.encode())
    assert (r.status_code, r.text) == (200, "success")
    events = await drain(event_probe)
    assert [e["type"] for e in events] == ["wechat.oa.text"]
    data = events[0]["data"]
    assert (data["openid"], data["msg_id"], data["payload"]["Content"]) == (OPENID, "7300000000000000001", "hello")


async def test_passive_reply_is_encrypted_and_wechatpy_reads_it(gateway: Gateway, event_probe) -> None:
    # "积分" needs the member's points: the gateway asks notify, which answers within the budget.
    route = gateway.replies.respond(json={"reply": {"msgtype": "text", "content": "积分 ]]> <b>100</b>"}})
    q, body = gateway.wechat.safe(OA, text_message(OPENID, "积分"))
    r = await gateway.push(OA, q, body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    asked = json.loads(route.calls.last.request.content)
    assert asked == {"appid": OA, "openid": OPENID, "trigger": "text", "text": "积分"}
    app = gateway.wechat.apps[OA]
    env = xmltodict.parse(r.text)["xml"]
    plain = WeChatCrypto(app["token"], app["encoding_aes_key"], OA).decrypt_message(
        r.text, env["MsgSignature"], env["TimeStamp"], env["Nonce"]
    )
    reply = xmltodict.parse(plain)["xml"]
    # User-controlled text never breaks out of its CDATA section.
    assert (reply["ToUserName"], reply["MsgType"], reply["Content"]) == (OPENID, "text", "积分 ]]> <b>100</b>")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (text_message(OPENID, "HELP"), "客服在线时间"),
        (subscribe(scene="store_42"), "42 号门店"),
        (subscribe(scene=None), "欢迎关注"),
        (
            {
                "ToUserName": "gh_000000000001",
                "FromUserName": OPENID,
                "CreateTime": int(time.time()),
                "MsgType": "event",
                "Event": "CLICK",
                "EventKey": "POINTS_MALL",
            },
            "积分兑换",
        ),
    ],
    ids=["keyword", "scene-welcome", "default-welcome", "menu-key"],
)
async def test_static_replies_come_from_the_rule_copy_without_asking_anyone(
    gateway: Gateway, event_probe, payload: dict[str, object], expected: str
) -> None:
    q, body = gateway.wechat.safe(OA, payload)
    r = await gateway.push(OA, q, body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert expected in gateway.wechat.open_reply(OA, r.text)["Content"]
    assert gateway.replies.call_count == 0, "a fixed reply is answered from the gateway's copy"
    assert not [e for e in await drain(event_probe) if e["type"] == "gateway.reply.deferred"]


async def test_no_rule_no_reply_and_no_call(gateway: Gateway, event_probe) -> None:
    q, body = gateway.wechat.safe(OA, text_message(OPENID, "天气怎么样"))
    r = await gateway.push(OA, q, body)
    assert (r.status_code, r.text) == (200, "success")
    assert gateway.replies.call_count == 0


async def test_rotation_accepts_the_previous_key_and_replies_with_it(gateway: Gateway) -> None:
    q, body = gateway.wechat.safe(OA, text_message(OPENID, "help"), key=OLD_KEY)
    r = await gateway.push(OA, q, body)
    assert r.status_code == 200
    assert "客服" in gateway.wechat.open_reply(OA, r.text, key=OLD_KEY)["Content"]


def _slow_notify(gateway: Gateway) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(gateway.settings.reply_budget_seconds + 1)
        return httpx.Response(200, json={"reply": {"msgtype": "text", "content": "你的可用积分：100 分"}})

    gateway.replies.mock(side_effect=slow)


@pytest.mark.parametrize(
    "notify",
    [
        _slow_notify,
        lambda gw: gw.replies.respond(json={"reply": None, "defer": True}),
        lambda gw: gw.replies.mock(side_effect=httpx.ConnectError("refused")),
        lambda gw: gw.replies.respond(status_code=503),
        lambda gw: gw.replies.respond(json={"unexpected": "body"}),
    ],
    ids=["over-budget", "notify-defers", "notify-down", "notify-busy", "notify-garbled"],
)
async def test_a_reply_that_needs_data_not_there_in_time_is_pending_and_deferred(
    gateway: Gateway, event_probe, notify
) -> None:  # type: ignore[no-untyped-def]
    notify(gateway)
    q, body = gateway.wechat.safe(OA, text_message(OPENID, "我的积分"))
    r = await gateway.push(OA, q, body)
    assert r.status_code == 200
    content = gateway.wechat.open_reply(OA, r.text)["Content"]
    assert content == "正在查询你的积分，一会儿发给你。", "the rule's pending text, never a made-up balance"
    events = {e["type"]: e["data"] for e in await drain(event_probe)}
    assert set(events) == {"wechat.oa.text", "gateway.reply.deferred"}
    deferred = events["gateway.reply.deferred"]
    assert (deferred["openid"], deferred["trigger"], deferred["text"]) == (OPENID, "text", "我的积分")
    assert deferred["push_id"] == events["wechat.oa.text"]["push_id"]


async def test_a_retried_push_is_not_replied_to_again(gateway: Gateway, event_probe) -> None:
    route = gateway.replies.respond(json={"reply": {"msgtype": "text", "content": "你的可用积分：5 分"}})
    t = int(time.time())
    first = await gateway.push(OA, *gateway.wechat.safe(OA, text_message(OPENID, "积分", t=t), nonce="r1"))
    again = await gateway.push(OA, *gateway.wechat.safe(OA, text_message(OPENID, "积分", t=t), nonce="r2"))
    assert "5 分" in gateway.wechat.open_reply(OA, first.text)["Content"]
    assert (again.status_code, again.text) == (200, "success")
    assert route.call_count == 1


async def test_the_rule_copy_follows_notify_on_every_replica(gateway: Gateway, amqp, apps_file, event_probe) -> None:  # type: ignore[no-untyped-def]
    """notify publishes a new rule set; the consumer stores it once and BOTH replicas serve it."""
    second = create_app(gateway_settings(apps_file))
    async with second.router.lifespan_context(second):
        replica: GatewayDeps = second.state.deps
        assert replica.reply_rules.version == gateway.deps.reply_rules.version  # loaded at start
        changed = dev_rules().model_copy(update={"menu": {"NEWS": "今日新闻：上新啦"}})
        await publish_rules(amqp, changed)

        async def both_current() -> bool:
            return gateway.deps.reply_rules.version == replica.reply_rules.version == changed.version

        await eventually(both_current)
        click = {
            "ToUserName": "gh_000000000001",
            "FromUserName": OPENID,
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": "CLICK",
            "EventKey": "NEWS",
        }
        transport = httpx.ASGITransport(app=second)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica.test") as client:
            q, body = gateway.wechat.safe(OA, click)
            r = await client.post(f"/wechat/callbacks/{OA}", params=q, content=body)
        assert gateway.wechat.open_reply(OA, r.text)["Content"] == "今日新闻：上新啦"
    # An older set delivered late (a retry overtaken by the newer one) does not win.
    stale = dev_rules().model_copy(update={"menu": {}})
    await publish_rules(amqp, stale, published_at=datetime.now(UTC) - timedelta(hours=1))

    async def both_consumed() -> bool:
        return await db_count("SELECT count(*) FROM inbox WHERE consumer = 'gateway'") == 2

    await eventually(both_consumed)
    assert await db_count("SELECT count(*) FROM reply_rules WHERE version = $1", changed.version) == 1
    await gateway.deps.reply_rules.refresh(gateway.deps.db)
    assert gateway.deps.reply_rules.version == changed.version


async def test_json_mini_program_and_shop_pushes_keep_64_bit_ids_exact(gateway: Gateway, event_probe) -> None:
    mp = {
        "ToUserName": "gh_000000000002",
        "FromUserName": "oMp1",
        "CreateTime": int(time.time()),
        "MsgType": "text",
        "Content": "hi",
        "MsgId": 23456789012345678901 // 10,
    }
    q, body = gateway.wechat.safe(MP, mp, json_body=True)
    assert (await gateway.push(MP, q, body, headers={"content-type": "application/json"})).text == "success"
    shop = {
        "ToUserName": "gh_000000000003",
        "FromUserName": "oShop1",
        "CreateTime": int(time.time()),
        "MsgType": "event",
        "Event": "channels_ec_order_pay",
        "order_info": {"order_id": 3705115058471208928, "pay_time": 1662480000},
    }
    q, body = gateway.wechat.safe(SHOP, shop, json_body=True)
    assert (await gateway.push(SHOP, q, body)).text == "success"
    events = {e["type"]: e["data"] for e in await drain(event_probe)}
    assert events["wechat.mp.text"]["msg_id"] == "2345678901234567890"
    assert events["wechat.shop.channels_ec_order_pay"]["payload"]["order_info"]["order_id"] == 3705115058471208928


async def test_unknown_types_are_published_generically(gateway: Gateway, event_probe) -> None:
    payload = {
        "ToUserName": "gh_000000000001",
        "FromUserName": OPENID,
        "CreateTime": int(time.time()),
        "MsgType": "event",
        "Event": "brand_new_thing",
        "Foo": "bar",
    }
    q, body = gateway.wechat.safe(OA, payload)
    assert (await gateway.push(OA, q, body)).text == "success"
    assert [e["type"] for e in await drain(event_probe)] == ["wechat.oa.brand_new_thing"]


async def test_signed_but_unparseable_push_is_kept_for_inspection_and_acknowledged(
    gateway: Gateway, event_probe
) -> None:
    q, body = gateway.wechat.safe(OA, {"ToUserName": "gh_000000000001", "MsgType": "text", "Content": "no sender"})
    r = await gateway.push(OA, q, body)
    assert (r.status_code, r.text) == (200, "success")
    assert await db_count("SELECT count(*) FROM inbound_pushes WHERE status = 'unparsed'") == 1
    assert await drain(event_probe) == []
    metrics = (await gateway.client.get("/metrics")).text
    assert 'siyu_gateway_unparsed_pushes_total{kind="oa"} 1.0' in metrics


# ---------------------------------------------------------------------------------------------- duplicates


async def test_the_same_push_ten_times_concurrently_is_one_event(gateway: Gateway, event_probe) -> None:
    t = int(time.time())
    sends = []
    for i in range(10):
        # WeChat retries with fresh query parameters but the same message (same CreateTime, Event).
        q, body = gateway.wechat.safe(OA, subscribe(t=t), nonce=f"n{i}")
        sends.append(gateway.push(OA, q, body))
    answers = await asyncio.gather(*sends)
    assert [a.status_code for a in answers] == [200] * 10
    # The one that stored it gets the welcome; WeChat's retries get success.
    assert sorted(a.text == "success" for a in answers) == [False] + [True] * 9
    assert [e["type"] for e in await drain(event_probe)] == ["wechat.oa.subscribe"]
    assert await db_count("SELECT count(*) FROM inbound_pushes") == 1


async def test_identical_retry_with_the_same_signature_is_a_duplicate(gateway: Gateway, event_probe) -> None:
    q, body = gateway.wechat.safe(OA, subscribe(scene=None))
    first = await gateway.push(OA, q, body)
    again = await gateway.push(OA, q, body)
    assert "欢迎关注" in gateway.wechat.open_reply(OA, first.text)["Content"]
    assert (again.status_code, again.text) == (200, "success")
    assert [e["type"] for e in await drain(event_probe) if e["type"].startswith("wechat.")] == ["wechat.oa.subscribe"]


async def test_messages_with_distinct_msgids_from_one_user_in_one_second_are_all_kept(
    gateway: Gateway, event_probe
) -> None:
    t = int(time.time())
    for i in range(3):
        q, body = gateway.wechat.safe(
            OA, text_message(OPENID, "x", msg_id=f"73000000000000000{i}0", t=t), nonce=f"m{i}"
        )
        await gateway.push(OA, q, body)
    assert [e["type"] for e in await drain(event_probe) if e["type"].startswith("wechat.")] == ["wechat.oa.text"] * 3


# ---------------------------------------------------------------------------------------------- rejected


async def assert_rejected(gateway: Gateway, event_probe, response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await written() == {"inbound_pushes": 0, "push_nonces": 0, "outbox": 0}
    assert await drain(event_probe) == []


async def test_unknown_appid_is_404(gateway: Gateway, event_probe) -> None:
    q, body = gateway.wechat.safe(OA, subscribe())
    await assert_rejected(gateway, event_probe, await gateway.push("wx9999999999999999", q, body), 404)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: {k: v for k, v in q.items() if k != "signature"},
        lambda q: q | {"signature": "f" * 40},
        lambda q: q | {"msg_signature": "0" * 40},
        lambda q: {k: v for k, v in q.items() if k != "msg_signature"},
        lambda q: q | {"timestamp": str(int(time.time()) - 3600)},
    ],
    ids=["unsigned", "bad-signature", "bad-msg-signature", "no-msg-signature", "stale-timestamp"],
)
async def test_unsigned_forged_or_stale_pushes_are_401(gateway: Gateway, event_probe, tamper) -> None:  # type: ignore[no-untyped-def]
    q, body = gateway.wechat.safe(OA, subscribe())
    await assert_rejected(gateway, event_probe, await gateway.push(OA, tamper(q), body), 401)


async def test_stale_timestamp_with_a_valid_signature_is_401(gateway: Gateway, event_probe) -> None:
    q, body = gateway.wechat.safe(OA, subscribe(), ts=str(int(time.time()) - 301))
    await assert_rejected(gateway, event_probe, await gateway.push(OA, q, body), 401)


async def test_replayed_signature_with_another_body_is_a_forgery(gateway: Gateway, event_probe) -> None:
    # Plaintext mode: `signature` covers token, timestamp and nonce only, never the body.
    q, body = gateway.wechat.plain(OA, text_message(OPENID, "real", msg_id="1"))
    assert (await gateway.push(OA, q, body)).text == "success"
    assert [e["type"] for e in await drain(event_probe)] == ["wechat.oa.text"]
    _, forged = gateway.wechat.plain(OA, text_message(OPENID, "forged", msg_id="2"))
    r = await gateway.push(OA, q, forged)
    assert r.status_code == 401
    assert await db_count("SELECT count(*) FROM inbound_pushes") == 1
    assert await drain(event_probe) == []


async def test_body_over_the_cap_is_413(gateway: Gateway, event_probe) -> None:
    q, _ = gateway.wechat.plain(OA, subscribe())
    big = b"<xml><A>" + b"x" * (gateway.settings.max_body_bytes + 1) + b"</A></xml>"
    await assert_rejected(gateway, event_probe, await gateway.push(OA, q, big), 413)


XXE = b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><Content>&x;</Content></xml>'
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><xml><a>&lol3;</a></xml>'
)


@pytest.mark.parametrize(
    "body", [XXE, LAUGHS, b"<xml><unclosed></xml>", b"not xml at all"], ids=["xxe", "laughs", "broken", "garbage"]
)
async def test_hostile_or_malformed_plaintext_is_400(gateway: Gateway, event_probe, body: bytes) -> None:
    q, _ = gateway.wechat.plain(OA, subscribe())
    await assert_rejected(gateway, event_probe, await gateway.push(OA, q, body), 400)


async def test_hostile_xml_inside_a_valid_encryption_is_400(gateway: Gateway, event_probe) -> None:
    q, body = gateway.wechat.safe(OA, XXE.decode())
    await assert_rejected(gateway, event_probe, await gateway.push(OA, q, body), 400)


def _reencrypt(gateway: Gateway, appid: str, raw_b64: str, q: dict[str, str]) -> tuple[dict[str, str], bytes]:
    app = gateway.wechat.apps[appid]
    body = f"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[{raw_b64}]]></Encrypt></xml>".encode()
    return q | {"msg_signature": sign(app["token"], q["timestamp"], q["nonce"], raw_b64)}, body


async def test_bad_base64_padding_or_appid_in_encrypt_is_400(gateway: Gateway, event_probe) -> None:
    app = gateway.wechat.apps[OA]
    wrong_appid = MessageCrypto(app["token"], app["encoding_aes_key"], "wx0ther00000000000").encrypt(b"<xml/>")
    cases = {
        "bad-base64": "!!!not-base64!!!",
        "not-a-block": base64.b64encode(b"x" * 17).decode(),
        "bad-padding": base64.b64encode(bytes(32)).decode(),
        "wrong-appid": wrong_appid,
    }
    for name, raw in cases.items():
        q = gateway.wechat.query(OA, nonce=name) | {"encrypt_type": "aes"}
        tq, body = _reencrypt(gateway, OA, raw, q)
        r = await gateway.push(OA, tq, body)
        assert r.status_code == 400, (name, r.text)
    await assert_rejected(gateway, event_probe, r, 400)


async def test_shop_push_in_plaintext_is_refused(gateway: Gateway, event_probe) -> None:
    q = gateway.wechat.query(SHOP)
    body = json.dumps(
        {
            "ToUserName": "gh_000000000003",
            "FromUserName": "o",
            "CreateTime": 1,
            "MsgType": "event",
            "Event": "channels_ec_order_pay",
        }
    ).encode()
    await assert_rejected(gateway, event_probe, await gateway.push(SHOP, q, body), 400)


# ---------------------------------------------------------------------------------------------- shop sync


def vip_callback(event: str, **body: object) -> dict[str, object]:
    return {
        "ToUserName": "gh_000000000002",
        "FromUserName": "oMpBuyer1",
        "CreateTime": int(time.time()),
        "MsgType": "event",
        "Event": event,
        **body,
    }


def open_json_reply(gateway: Gateway, appid: str, text: str) -> dict[str, object]:
    env = json.loads(text)
    app = gateway.wechat.apps[appid]
    assert env["MsgSignature"] == sign(app["token"], str(env["TimeStamp"]), env["Nonce"], env["Encrypt"])
    return json.loads(gateway.wechat.crypto(appid).decrypt(env["Encrypt"]).plaintext)


async def test_vip_user_info_is_answered_by_identity_in_the_response(gateway: Gateway, event_probe) -> None:
    route = gateway.upstream.post(f"{gateway.settings.identity_url}/internal/shop/vip-user-info").respond(
        json={"errcode": 0, "errmsg": "ok", "info": {"is_vip": True, "identity": "会员", "outer_userid": "m1"}}
    )
    q, body = gateway.wechat.safe(
        MP, vip_callback("channels_ec_vip_user_info_get", info={"shop_appid": SHOP}), json_body=True
    )
    r = await gateway.push(MP, q, body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert open_json_reply(gateway, MP, r.text)["info"] == {"is_vip": True, "identity": "会员", "outer_userid": "m1"}
    assert json.loads(route.calls.last.request.content)["openid"] == "oMpBuyer1"
    assert [e["type"] for e in await drain(event_probe)] == ["wechat.mp.channels_ec_vip_user_info_get"]


async def test_shop_callbacks_get_the_safe_default_when_the_owner_is_slow_or_down(gateway: Gateway) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(gateway.settings.reply_budget_seconds + 1)
        return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "result": 1})

    settings = gateway.settings
    gateway.upstream.post(f"{settings.identity_url}/internal/shop/vip-user-info").mock(
        side_effect=httpx.ConnectError("refused")
    )
    gateway.upstream.post(f"{settings.commerce_url}/internal/shop/vip-discount/use").mock(side_effect=slow)
    q, body = gateway.wechat.safe(
        MP, vip_callback("channels_ec_vip_user_info_get", info={"shop_appid": SHOP}), json_body=True
    )
    assert open_json_reply(gateway, MP, (await gateway.push(MP, q, body)).text)["info"] == {"is_vip": False}
    use = vip_callback(
        "channels_ec_order_use_vip_discount",
        order_info={"shop_appid": SHOP, "order_session_id": "s1", "scene": 1, "unique_id": "u1", "price_info": {}},
    )
    q, body = gateway.wechat.safe(MP, use, json_body=True, nonce="use")
    assert open_json_reply(gateway, MP, (await gateway.push(MP, q, body)).text)["result"] == 2


async def test_a_retried_shop_callback_is_answered_again_but_published_once(gateway: Gateway, event_probe) -> None:
    route = gateway.upstream.post(f"{gateway.settings.identity_url}/internal/shop/vip-user-info").respond(
        json={"errcode": 0, "errmsg": "ok", "info": {"is_vip": True, "identity": "会员"}}
    )
    q, body = gateway.wechat.safe(
        MP, vip_callback("channels_ec_vip_user_info_get", info={"shop_appid": SHOP}), json_body=True
    )
    first, again = await gateway.push(MP, q, body), await gateway.push(MP, q, body)
    assert open_json_reply(gateway, MP, first.text) == open_json_reply(gateway, MP, again.text)
    assert open_json_reply(gateway, MP, again.text)["info"]["is_vip"] is True
    assert route.call_count == 2
    assert len(await drain(event_probe)) == 1
