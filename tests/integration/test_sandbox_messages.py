"""The sandbox's messaging APIs: template libraries, template messages, subscribe messages,
subscription notices, the user's subscription choices, and the inbox.

Same harness as test_sandbox_identity.py (in-process sandbox, respx for the gateway). Pushes are
opened with wechatpy, the independent oracle for signatures and encryption.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from wechatpy.crypto import WeChatCrypto

from shared.wechat import codec
from shared.wechat.apps import AppKind, load_apps
from shared.wechat.push import SubscribeMsgEvent, TemplateSendJobFinishEvent, parse_push
from tests.integration.test_sandbox import GATEWAY, MP, OA, SHOP, T0, FakeClock, callbacks, open_push, query
from tests.integration.test_sandbox_identity import MP_XML, Harness, gateway, oid, sb
from tests.integration.test_sandbox_messaging import decrypt_json
from tools.wechat_sandbox import create_app
from tools.wechat_sandbox.messages import CATALOG, valid_value

__all__ = ["gateway", "sb"]  # fixtures shared with test_sandbox_identity

TEMPLATE_SEND = "/cgi-bin/message/template/send"
SUBSCRIBE_SEND = "/cgi-bin/message/subscribe/send"
BIZSEND = "/cgi-bin/message/subscribe/bizsend"
EXAMPLES = {name: {key: value for key, _, value in fields} for name, _, fields in CATALOG}
ORDER_PAGE = "pages/order/detail?order_id=3705115058471208928&send_id=s-42"


# -- helpers ----------------------------------------------------------------------------------------


async def template(sb: Harness, app: dict[str, str], name: str, *kinds: str) -> dict[str, Any]:
    kinds = kinds or ("template",)
    found = [t for t in await sb.get("/sandbox/templates", appid=app["appid"]) if t["name"] == name]
    (match,) = [t for t in found if t["kind"] in kinds]
    return match  # type: ignore[no-any-return]


def data(name: str, **override: Any) -> dict[str, Any]:
    return {key: {"value": value} for key, value in (EXAMPLES[name] | override).items()}


def pushes(gw: respx.MockRouter, app: dict[str, str], event: str | None = None) -> list[dict[str, Any]]:
    """Every push to ``app`` so far, decrypted (XML or JSON), optionally only one ``Event``."""
    out = []
    for call in gw.calls:
        if call.request.url.path != f"/wechat/callbacks/{app['appid']}":
            continue
        body = decrypt_json(call.request, app) if app.get("push_format") == "json" else open_push(call.request, app)
        if event is None or body.get("Event") == event:
            out.append(body)
    return out


async def inbox(sb: Harness, user: dict[str, Any]) -> list[dict[str, Any]]:
    return await sb.get(f"/sandbox/users/{user['user_id']}/inbox")  # type: ignore[no-any-return]


async def popup(sb: Harness, user: dict[str, Any], app: dict[str, str], results: dict[str, str], **extra: Any) -> Any:
    return await sb.control(user, "subscribe-popup", {"appid": app["appid"], "results": results, **extra})


# -- the template library ---------------------------------------------------------------------------

SIYU_MESSAGES = {
    "order_paid",
    "order_shipped",
    "refund",
    "points_earned",
    "points_expiring",
    "tier_changed",
    "gift_received",
    "gift_accepted",
    "gift_expired",
    "reward_redeemed",
    "order_unpaid",
    "activity",
}


async def test_each_app_has_a_template_library_served_on_wechats_paths(sb: Harness) -> None:
    oa = await sb.get("/sandbox/templates", appid=OA["appid"])
    by_kind: dict[str, set[str]] = {}
    for t in oa:
        by_kind.setdefault(t["kind"], set()).add(t["name"])
        assert len(t["template_id"]) == 43
        assert t["appid"] == OA["appid"]
    # Template messages may not market (no "activity"); every message has a subscription notice.
    assert by_kind["template"] == SIYU_MESSAGES - {"activity"}
    assert by_kind["subscribe_long"] == {"points_earned", "points_expiring", "tier_changed"}
    assert by_kind["subscribe_once"] | by_kind["subscribe_long"] == SIYU_MESSAGES
    mp = await sb.get("/sandbox/templates", appid=MP["appid"])
    assert {t["name"] for t in mp} == SIYU_MESSAGES and {t["kind"] for t in mp} == {"subscribe_once"}
    assert await sb.get("/sandbox/templates", appid=SHOP["appid"]) == []
    assert (await sb.http.get("/sandbox/templates", params={"appid": "wxnope"})).status_code == 404

    paid = await template(sb, OA, "order_paid")
    assert paid["title"] == "订单支付成功通知"
    assert paid["fields"] == [
        {"key": "character_string1", "max_len": 32},
        {"key": "amount2", "max_len": 13},
        {"key": "thing3", "max_len": 20},
        {"key": "time4", "max_len": 41},
    ]
    limits = {f["key"]: f["max_len"] for t in oa + mp for f in t["fields"]}
    assert {k: v for k, v in limits.items() if k in ("phrase1", "name1", "number1", "date2")} == {
        "phrase1": 5,
        "name1": 10,
        "number1": 32,
        "date2": 41,
    }

    listed = (await sb.wx_get("/cgi-bin/template/get_all_private_template"))["template_list"]
    assert [t["template_id"] for t in listed] == [t["template_id"] for t in oa if t["kind"] == "template"]
    first = listed[0]
    assert set(first) == {"template_id", "title", "primary_industry", "deputy_industry", "content", "example"}
    assert first["content"] == "订单编号:{{character_string1.DATA}}\n支付金额:{{amount2.DATA}}\n" + (
        "商品名称:{{thing3.DATA}}\n支付时间:{{time4.DATA}}\n"
    )
    notices = await sb.wx_get("/wxaapi/newtmpl/gettemplate")
    assert (notices["errcode"], notices["errmsg"]) == (0, "ok")
    types = {t["priTmplId"]: t["type"] for t in notices["data"]}
    assert types == {t["template_id"]: 3 if t["kind"] == "subscribe_long" else 2 for t in oa if t["kind"] != "template"}
    assert set(notices["data"][0]) == {"priTmplId", "title", "content", "example", "type"}
    mp_list = await sb.wx_get("/wxaapi/newtmpl/gettemplate", MP)
    assert [t["priTmplId"] for t in mp_list["data"]] == [t["template_id"] for t in mp]
    assert (await sb.wx_get("/cgi-bin/template/get_all_private_template", MP))["errcode"] == 48001
    assert (await sb.wx_get("/wxaapi/newtmpl/gettemplate", SHOP))["errcode"] == 48001
    assert (await sb.get("/wxaapi/newtmpl/gettemplate", access_token="bad"))["errcode"] == 40001


async def test_template_ids_come_from_the_seed() -> None:
    runs = [Harness(seed=0), Harness(seed=0), Harness(seed=1)]
    try:
        ids = [[t["template_id"] for t in await h.get("/sandbox/templates")] for h in runs]
    finally:
        for h in runs:
            await h.aclose()
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == len(ids[0])
    assert not set(ids[0]) & set(ids[2])


async def test_the_dev_apps_file_gets_the_whole_library() -> None:
    apps = load_apps(Path(__file__).parents[2] / "deploy" / "dev" / "wechat-apps.yaml")
    app = create_app(apps, GATEWAY, seed=0, clock=FakeClock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as http:
        library = (await http.get("/sandbox/templates")).json()
    await app.state.pusher.aclose()
    by_app: dict[str, set[tuple[str, str]]] = {}
    for t in library:
        by_app.setdefault(t["appid"], set()).add((t["kind"], t["name"]))
    oa = apps.first(AppKind.OFFICIAL_ACCOUNT).appid
    assert {n for k, n in by_app[oa] if k == "template"} == SIYU_MESSAGES - {"activity"}
    assert {n for k, n in by_app[oa] if k != "template"} == SIYU_MESSAGES
    mp = apps.first(AppKind.MINI_PROGRAM).appid
    assert by_app[mp] == {("subscribe_once", n) for n in SIYU_MESSAGES}


# -- template messages ------------------------------------------------------------------------------


async def test_a_template_message_reaches_a_follower_and_reports_its_result(
    sb: Harness, gateway: respx.MockRouter
) -> None:
    user = await sb.follower()
    paid = await template(sb, OA, "order_paid")
    sb.clock.advance(7)
    body = {
        "touser": oid(user),
        "template_id": paid["template_id"],
        "url": "https://brand.test/orders/1?send_id=s-42",
        "miniprogram": {"appid": MP["appid"], "pagepath": ORDER_PAGE},
        "data": data("order_paid") | {"extra9": {"value": "ignored"}},
    }
    answer = await sb.wx(TEMPLATE_SEND, body)
    assert (answer["errcode"], answer["errmsg"]) == (0, "ok")
    msgid = answer["msgid"]
    assert isinstance(msgid, int) and msgid > 2**53  # 64-bit: a float parser would corrupt it

    (finish,) = pushes(gateway, OA, "TEMPLATESENDJOBFINISH")
    assert finish == {
        "ToUserName": OA["original_id"],
        "FromUserName": oid(user),
        "CreateTime": str(int(T0) + 7),
        "MsgType": "event",
        "Event": "TEMPLATESENDJOBFINISH",
        "MsgID": str(msgid),
        "Status": "success",
    }
    (entry,) = await inbox(sb, user)
    assert entry == {
        "seq": 1,
        "delivered_at": int(T0) + 7,
        "appid": OA["appid"],
        "kind": "template",
        "template_id": paid["template_id"],
        "title": "订单支付成功通知",
        "data": data("order_paid"),
        "jump": {"url": body["url"], "miniprogram": {"appid": MP["appid"], "pagepath": ORDER_PAGE}},
        "msgid": str(msgid),
        "client_msg_id": None,
        "opened_at": None,
        "opens": 0,
    }

    # Tapping it opens the mini-program (preferred over the url), query string intact.
    sb.clock.advance(60)
    opened = await sb.control(user, "open", {"seq": 1})
    assert opened == {
        "seq": 1,
        "kind": "template",
        "appid": OA["appid"],
        "opened_at": int(T0) + 67,
        "opened": "miniprogram",
        "miniprogram": {"appid": MP["appid"], "pagepath": ORDER_PAGE},
        "pagepath": ORDER_PAGE,
        "path": "pages/order/detail",
        "query": {"order_id": "3705115058471208928", "send_id": "s-42"},
    }
    sb.clock.advance(5)
    assert (await sb.control(user, "open", {"seq": 1}))["opened_at"] == int(T0) + 72
    (entry,) = await inbox(sb, user)
    assert (entry["opened_at"], entry["opens"]) == (int(T0) + 67, 2)


async def test_template_message_errors(sb: Harness, gateway: respx.MockRouter) -> None:
    follower = await sb.follower()
    stranger = await sb.user()
    paid = await template(sb, OA, "order_paid")
    notice = await template(sb, OA, "order_paid", "subscribe_once")
    ok = {"touser": oid(follower), "template_id": paid["template_id"], "data": data("order_paid")}

    async def send(body: dict[str, Any], app: dict[str, str] = OA) -> dict[str, Any]:
        return await sb.wx(TEMPLATE_SEND, body, app)  # type: ignore[no-any-return]

    assert await send({**ok, "touser": oid(stranger)}) == {"errcode": 43004, "errmsg": "require subscribe"}
    assert await send({**ok, "template_id": "x" * 43}) == {"errcode": 40037, "errmsg": "invalid template_id"}
    assert (await send({**ok, "template_id": notice["template_id"]}))["errcode"] == 40037
    assert (await send({**ok, "template_id": None}))["errcode"] == 40037
    assert await send({**ok, "touser": oid(follower, MP)}) == {"errcode": 40003, "errmsg": "invalid openid"}
    assert (await send({**ok, "touser": ""}))["errcode"] == 40003
    assert (await send({k: v for k, v in ok.items() if k != "touser"}))["errcode"] == 40003
    missing = data("order_paid")
    del missing["thing3"]
    assert await send({**ok, "data": missing}) == {
        "errcode": 47003,
        "errmsg": "argument invalid! data.thing3.value is emtpy",
    }
    assert (await send({**ok, "data": data("order_paid", thing3="   ")}))["errmsg"].endswith("is emtpy")
    assert await send({**ok, "data": data("order_paid", thing3="测" * 21)}) == {
        "errcode": 47003,
        "errmsg": "argument invalid! data.thing3.value invalid",
    }
    assert (await send({**ok, "data": {**data("order_paid"), "thing3": "bare"}}))["errcode"] == 47003
    assert (await send({**ok, "data": ["not", "an", "object"]}))["errcode"] == 47001
    assert (await send({**ok, "url": 42}))["errcode"] == 47001
    assert await send({**ok, "miniprogram": {"appid": "wx" + "9" * 16, "pagepath": "p"}}) == {
        "errcode": 40166,
        "errmsg": "invalid weapp appid",
    }
    assert (await send({**ok, "miniprogram": {"appid": OA["appid"]}}))["errcode"] == 40166
    assert (await send({**ok, "miniprogram": {"appid": MP["appid"], "pagepath": 7}}))["errcode"] == 40165
    assert (await send({**ok, "miniprogram": "pages/x"}))["errcode"] == 47001
    assert (await send(ok, MP))["errcode"] == 48001
    token = await sb.token()
    for raw, errcode in ((b"", 44002), (b"not json", 47001), (b"[1]", 47001)):
        r = await sb.http.post(TEMPLATE_SEND, params={"access_token": token}, content=raw)
        assert r.json()["errcode"] == errcode
    assert (await sb.get(TEMPLATE_SEND, access_token=token))["errcode"] == 43002
    # Nothing reached anyone, and no result was pushed for a refused send.
    assert await inbox(sb, follower) == [] and await inbox(sb, stranger) == []
    assert pushes(gateway, OA, "TEMPLATESENDJOBFINISH") == []
    # A follower who unfollows is refused again.
    assert (await send(ok))["errcode"] == 0
    await sb.control(follower, "unfollow", {"appid": OA["appid"]})
    assert (await send(ok))["errcode"] == 43004


# Each case: a template, the field changed, and the value; True when WeChat accepts it.
FIELD_CASES = [
    ("order_paid", "thing3", "测" * 20, True),
    ("order_paid", "thing3", "a" * 20, True),
    ("order_paid", "thing3", "测" * 21, False),
    ("order_paid", "thing3", "line\nbreak", False),
    ("order_paid", "character_string1", "A1-_#" * 6 + "Z9", True),
    ("order_paid", "character_string1", "9" * 33, False),
    ("order_paid", "character_string1", "订单123", False),
    ("order_paid", "character_string1", "has space", False),
    ("order_paid", "amount2", "¥1234567.890元", True),
    ("order_paid", "amount2", "39.8元", True),
    ("order_paid", "amount2", "128", True),
    ("order_paid", "amount2", "¥12345678901", False),
    ("order_paid", "amount2", "¥1,280.00", False),
    ("order_paid", "amount2", "free", False),
    ("order_paid", "time4", "15:01", True),
    ("order_paid", "time4", "2024-05-01 10:30:00", True),
    ("order_paid", "time4", "2024年5月1日 10:30~2024年5月1日 12:00", True),
    ("order_paid", "time4", "2024-05-01T10:30:00", False),
    ("order_paid", "time4", "25:00", False),
    ("order_paid", "time4", "2024年5月1日", False),
    ("order_shipped", "phrase3", "顺丰速运快", True),
    ("order_shipped", "phrase3", "顺丰速运快递", False),
    ("order_shipped", "phrase3", "SF", False),
    ("points_earned", "number1", "9" * 32, True),
    ("points_earned", "number1", "12.5", True),
    ("points_earned", "number1", 128, True),
    ("points_earned", "number1", "9" * 33, False),
    ("points_earned", "number1", "-5", False),
    ("points_earned", "number1", "12a", False),
    ("points_earned", "number1", True, False),
    ("points_expiring", "date2", "2024年12月31日", True),
    ("points_expiring", "date2", "2024-12-31", True),
    ("points_expiring", "date2", "12-31", True),
    ("points_expiring", "date2", "2024/12/31 23:59", True),
    ("points_expiring", "date2", "2024年13月1日", False),
    ("points_expiring", "date2", "2024-12/31", False),
    ("points_expiring", "date2", "tomorrow", False),
    ("gift_received", "name1", "欧阳" * 5, True),
    ("gift_received", "name1", "欧阳" * 5 + "娜", False),
    ("gift_received", "name1", "Li Lei-Han" * 2, True),
    ("gift_received", "name1", "L" * 21, False),
    ("gift_received", "name1", "Li Lei 2", False),
]


@pytest.mark.parametrize(("name", "key", "value", "accepted"), FIELD_CASES)
async def test_field_values_follow_their_type(
    sb: Harness, gateway: respx.MockRouter, name: str, key: str, value: Any, accepted: bool
) -> None:
    user = await sb.follower()
    t = await template(sb, OA, name)
    body = {"touser": oid(user), "template_id": t["template_id"], "data": data(name) | {key: {"value": value}}}
    answer = await sb.wx(TEMPLATE_SEND, body)
    if accepted:
        assert answer["errcode"] == 0
        assert (await inbox(sb, user))[0]["data"][key] == {"value": str(value)}
    else:
        assert answer == {"errcode": 47003, "errmsg": f"argument invalid! data.{key}.value invalid"}
        assert await inbox(sb, user) == []


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("letter", ["abc", "Z" * 32], ["a" * 33, "ab1", "测"]),
        ("symbol", ["#", "-_!?%"], ["#" * 6, "a#", "# "]),
        ("phone_number", ["+86-0766-66888866", "1" * 17], ["1" * 18, "138 0000", "tel123"]),
        ("car_number", ["粤A8Z888挂", "A12345", "京A88888"], ["粤A8Z888挂8", "A测345", "AB-123"]),
    ],
)
def test_types_without_a_seeded_template(kind: str, good: list[str], bad: list[str]) -> None:
    assert all(valid_value(kind, v) for v in good), good
    assert not any(valid_value(kind, v) for v in bad), bad


async def test_client_msg_id_sends_once_per_openid_for_ten_minutes(sb: Harness, gateway: respx.MockRouter) -> None:
    user, other = await sb.follower(), await sb.follower()
    paid = await template(sb, OA, "order_paid")

    def body(who: dict[str, Any], client_msg_id: str = "order-paid-3705") -> dict[str, Any]:
        return {"touser": oid(who), "template_id": paid["template_id"], "data": data("order_paid"),
                "client_msg_id": client_msg_id}  # fmt: skip

    first = await sb.wx(TEMPLATE_SEND, body(user))
    sb.clock.advance(599)
    again = await sb.wx(TEMPLATE_SEND, body(user) | {"data": data("order_paid", thing3="另一件商品")})
    assert again == first  # the first send's answer; nothing is sent
    assert len(await inbox(sb, user)) == 1
    assert len(pushes(gateway, OA, "TEMPLATESENDJOBFINISH")) == 1
    # Another openid, or another id, is another message.
    assert (await sb.wx(TEMPLATE_SEND, body(other)))["msgid"] != first["msgid"]
    assert (await sb.wx(TEMPLATE_SEND, body(user, "order-paid-3706")))["msgid"] != first["msgid"]
    sb.clock.advance(1)  # ten minutes after the first: the id is free again
    later = await sb.wx(TEMPLATE_SEND, body(user))
    assert later["errcode"] == 0 and later["msgid"] != first["msgid"]
    assert [m["client_msg_id"] for m in await inbox(sb, user)] == [
        "order-paid-3705",
        "order-paid-3706",
        "order-paid-3705",
    ]
    # A refused send does not use up its id.
    stranger = await sb.user()
    assert (await sb.wx(TEMPLATE_SEND, body(stranger, "x-1")))["errcode"] == 43004
    await sb.control(stranger, "follow", {"appid": OA["appid"]})
    assert (await sb.wx(TEMPLATE_SEND, body(stranger, "x-1")))["errcode"] == 0
    assert len(await inbox(sb, stranger)) == 1


async def test_a_user_who_blocks_template_messages_gets_nothing(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower()
    paid = await template(sb, OA, "order_paid")
    body = {"touser": oid(user), "template_id": paid["template_id"], "data": data("order_paid")}
    blocked = await sb.control(user, "template-block", {"appid": OA["appid"]})
    assert blocked == {"user_id": user["user_id"], "appid": OA["appid"], "blocked": True}
    answer = await sb.wx(TEMPLATE_SEND, body)
    assert answer["errcode"] == 0  # WeChat accepts the call; the block shows in the result push
    assert await inbox(sb, user) == []
    (finish,) = pushes(gateway, OA, "TEMPLATESENDJOBFINISH")
    assert (finish["MsgID"], finish["Status"]) == (str(answer["msgid"]), "failed:user block")
    await sb.control(user, "template-block", {"appid": OA["appid"], "blocked": False})
    assert (await sb.wx(TEMPLATE_SEND, body))["errcode"] == 0
    assert len(await inbox(sb, user)) == 1
    assert pushes(gateway, OA, "TEMPLATESENDJOBFINISH")[-1]["Status"] == "success"
    r = await sb.http.post(f"/sandbox/users/{user['user_id']}/template-block", json={"appid": MP["appid"]})
    assert r.status_code == 400


@pytest.mark.parametrize(("path", "app"), [(TEMPLATE_SEND, OA), (SUBSCRIBE_SEND, MP), (BIZSEND, OA)])
async def test_sends_refuse_hostile_input(
    sb: Harness, gateway: respx.MockRouter, path: str, app: dict[str, str]
) -> None:
    user = await sb.follower()
    kind = ("template",) if path == TEMPLATE_SEND else ("subscribe_once",)
    tid = (await template(sb, app, "order_paid", *kind))["template_id"]
    if path != TEMPLATE_SEND:
        await popup(sb, user, app, {tid: "accept"})
    ok = {"touser": oid(user, app), "template_id": tid, "data": data("order_paid")}
    token = await sb.token(app)
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"data":' * 50_000 + b"1" + b"}" * 50_000, b"\xff\xfe{}"):
        r = await sb.http.post(path, params={"access_token": token}, content=raw)
        assert (r.status_code, r.json()["errcode"]) == (200, 47001)
    for body, errcode in [
        ({**ok, "data": data("order_paid", thing3="测" * 1_000_000)}, 47003),
        ({**ok, "data": data("order_paid", thing3=["a"])}, 47003),
        ({**ok, "data": data("order_paid", thing3={"value": "nested"})}, 47003),
        ({**ok, "data": data("order_paid", thing3="\u202e\u0000bad")}, 47003),
        ({**ok, "template_id": ["x"]}, 40037),
        ({**ok, "touser": {"$ne": ""}}, 40003),
    ]:
        assert (await sb.post(path, body, access_token=token))["errcode"] == errcode
    assert (await sb.post(path, ok))["errcode"] == 41001  # no token
    assert (await sb.post(path, ok, access_token="forged"))["errcode"] == 40001
    assert await inbox(sb, user) == []
    # Thousands of keys the template does not have are ignored, not stored.
    noisy = {**ok, "data": data("order_paid") | {f"thing{n}": {"value": "x"} for n in range(10, 5_000)}}
    assert (await sb.post(path, noisy, access_token=token))["errcode"] == 0
    assert set((await inbox(sb, user))[0]["data"]) == {"character_string1", "amount2", "thing3", "time4"}


# -- mini-program subscribe messages ----------------------------------------------------------------


async def test_each_acceptance_allows_one_subscribe_message(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()  # no follow needed
    paid = await template(sb, MP, "order_paid", "subscribe_once")
    shipped = await template(sb, MP, "order_shipped", "subscribe_once")
    send = {"touser": oid(user, MP), "template_id": paid["template_id"], "page": ORDER_PAGE,
            "miniprogram_state": "trial", "data": data("order_paid")}  # fmt: skip
    assert await sb.wx(SUBSCRIBE_SEND, send, MP) == {"errcode": 43101, "errmsg": "user refuse to accept the msg"}

    answer = await popup(sb, user, MP, {paid["template_id"]: "accept", shipped["template_id"]: "reject"})
    assert (answer["status"], answer["body"]) == (200, "success")
    assert answer["subscriptions"] == [
        {"template_id": paid["template_id"], "name": "order_paid", "kind": "subscribe_once", "remaining": 1,
         "long_term": False},
        {"template_id": shipped["template_id"], "name": "order_shipped", "kind": "subscribe_once", "remaining": 0,
         "long_term": False},
    ]  # fmt: skip
    (event,) = pushes(gateway, MP, "subscribe_msg_popup_event")
    assert event == {
        "ToUserName": MP["original_id"],
        "FromUserName": oid(user, MP),
        "CreateTime": int(T0),
        "MsgType": "event",
        "Event": "subscribe_msg_popup_event",
        "List": [
            {"TemplateId": paid["template_id"], "SubscribeStatusString": "accept", "PopupScene": "0"},
            {"TemplateId": shipped["template_id"], "SubscribeStatusString": "reject", "PopupScene": "0"},
        ],
    }

    sb.clock.advance(30)
    sent = await sb.wx(SUBSCRIBE_SEND, send, MP)
    assert (sent["errcode"], sent["errmsg"]) == (0, "ok") and sent["msgid"] > 2**53
    assert (await sb.wx(SUBSCRIBE_SEND, send, MP))["errcode"] == 43101  # the one authorisation is spent
    shipped_send = {**send, "template_id": shipped["template_id"], "data": data("order_shipped")}
    assert (await sb.wx(SUBSCRIBE_SEND, shipped_send, MP))["errcode"] == 43101  # rejected
    (result,) = pushes(gateway, MP, "subscribe_msg_sent_event")
    assert result["List"] == {  # one template: an object, not an array (WeChat's JSON quirk)
        "TemplateId": paid["template_id"],
        "MsgID": str(sent["msgid"]),
        "ErrorCode": "0",
        "ErrorStatus": "success",
    }
    (entry,) = await inbox(sb, user)
    assert entry == {
        "seq": 1,
        "delivered_at": int(T0) + 30,
        "appid": MP["appid"],
        "kind": "subscribe",
        "template_id": paid["template_id"],
        "title": "订单支付成功通知",
        "data": data("order_paid"),
        "jump": {"miniprogram": {"appid": MP["appid"], "pagepath": ORDER_PAGE}},
        "msgid": str(sent["msgid"]),
        "miniprogram_state": "trial",
        "lang": "zh_CN",
        "opened_at": None,
        "opens": 0,
    }
    opened = await sb.control(user, "open", {"seq": 1})
    assert (opened["opened"], opened["pagepath"]) == ("miniprogram", ORDER_PAGE)
    assert opened["query"] == {"order_id": "3705115058471208928", "send_id": "s-42"}

    # Accepting twice allows two sends.
    await popup(sb, user, MP, {paid["template_id"]: "accept"})
    await popup(sb, user, MP, {paid["template_id"]: "accept"})
    assert (await sb.get(f"/sandbox/users/{user['user_id']}/subscriptions", appid=MP["appid"]))[0]["remaining"] == 2
    assert [(await sb.wx(SUBSCRIBE_SEND, send, MP))["errcode"] for _ in range(3)] == [0, 0, 43101]
    # Without a page the message has no jump.
    await popup(sb, user, MP, {paid["template_id"]: "accept"})
    assert (await sb.wx(SUBSCRIBE_SEND, {k: v for k, v in send.items() if k != "page"}, MP))["errcode"] == 0
    last = (await inbox(sb, user))[-1]
    assert last["jump"] == {}
    r = await sb.http.post(f"/sandbox/users/{user['user_id']}/open", json={"seq": last["seq"]})
    assert r.status_code == 409


async def test_subscribe_message_errors_spend_nothing(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()
    paid = await template(sb, MP, "order_paid", "subscribe_once")
    await popup(sb, user, MP, {paid["template_id"]: "accept"})
    ok = {"touser": oid(user, MP), "template_id": paid["template_id"], "data": data("order_paid")}
    oa_notice = await template(sb, OA, "order_paid", "subscribe_once")
    xml_mp = await template(sb, MP_XML, "order_paid", "subscribe_once")
    cases: list[tuple[dict[str, Any], dict[str, str], int]] = [
        ({**ok, "touser": oid(user)}, MP, 40003),  # the service account's openid
        ({**ok, "touser": 42}, MP, 40003),
        ({**ok, "template_id": oa_notice["template_id"]}, MP, 40037),
        ({**ok, "template_id": xml_mp["template_id"]}, MP, 40037),  # another mini-program's template
        ({**ok, "data": data("order_paid", amount2="one yuan")}, MP, 47003),
        ({**ok, "data": {}}, MP, 47003),
        ({**ok, "miniprogram_state": "production"}, MP, 47003),
        ({**ok, "lang": "fr_FR"}, MP, 47003),
        ({**ok, "page": ["pages/x"]}, MP, 47001),
        (ok, OA, 48001),
        (ok, SHOP, 48001),
    ]
    for body, app, errcode in cases:
        assert (await sb.wx(SUBSCRIBE_SEND, body, app))["errcode"] == errcode, (body, app)
    assert await inbox(sb, user) == []
    assert (await sb.wx(SUBSCRIBE_SEND, ok, MP))["errcode"] == 0  # the authorisation is still there


async def test_a_mini_program_that_pushes_xml_gets_xml_events(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()
    ids = [(await template(sb, MP_XML, n, "subscribe_once"))["template_id"] for n in ("refund", "gift_received")]
    await popup(sb, user, MP_XML, {ids[0]: "accept", ids[1]: "accept"})
    (event,) = pushes(gateway, MP_XML, "subscribe_msg_popup_event")
    assert event["SubscribeMsgPopupEvent"]["List"] == [
        {"TemplateId": ids[0], "SubscribeStatusString": "accept", "PopupScene": "0"},
        {"TemplateId": ids[1], "SubscribeStatusString": "accept", "PopupScene": "0"},
    ]
    send = {"touser": oid(user, MP_XML), "template_id": ids[0], "data": data("refund")}
    sent = await sb.wx(SUBSCRIBE_SEND, send, MP_XML)
    (result,) = pushes(gateway, MP_XML, "subscribe_msg_sent_event")
    assert result["SubscribeMsgSentEvent"]["List"] == {
        "TemplateId": ids[0],
        "MsgID": str(sent["msgid"]),
        "ErrorCode": "0",
        "ErrorStatus": "success",
    }


async def test_popup_and_change_check_their_input(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()
    once = [(await template(sb, MP, n, "subscribe_once"))["template_id"] for n in ("refund", "activity", "order_paid")]
    extra = (await template(sb, MP, "order_shipped", "subscribe_once"))["template_id"]
    oa_template = (await template(sb, OA, "refund"))["template_id"]
    uid = user["user_id"]
    bad: list[tuple[str, str, dict[str, Any], int]] = [
        (uid, "subscribe-popup", {"appid": MP["appid"], "results": dict.fromkeys([*once, extra], "accept")}, 400),
        (uid, "subscribe-popup", {"appid": MP["appid"], "results": {"nope": "accept"}}, 400),
        (uid, "subscribe-popup", {"appid": OA["appid"], "results": {oa_template: "accept"}}, 400),  # not a notice
        (uid, "subscribe-popup", {"appid": MP["appid"], "results": {once[0]: "ban"}}, 422),
        (uid, "subscribe-popup", {"appid": MP["appid"], "results": {}}, 422),
        (uid, "subscribe-popup", {"appid": MP["appid"], "results": {once[0]: "accept"}, "popup_scene": 2}, 400),
        (uid, "subscribe-popup", {"appid": SHOP["appid"], "results": {once[0]: "accept"}}, 400),
        (uid, "subscribe-popup", {"appid": "wxnope", "results": {once[0]: "accept"}}, 404),
        ("u9999", "subscribe-popup", {"appid": MP["appid"], "results": {once[0]: "accept"}}, 404),
        (uid, "subscribe-popup", {"appid": MP["appid"], "results": {once[0]: "accept"}, "x": 1}, 422),
        (uid, "subscribe-change", {"appid": MP["appid"], "template_ids": []}, 422),
        (uid, "subscribe-change", {"appid": MP["appid"], "template_ids": [once[0], "nope"]}, 400),
        (uid, "open", {"seq": 1}, 404),
        (uid, "open", {"seq": 0}, 422),
        (uid, "open", {"seq": "first"}, 422),
    ]
    for who, action, body, code in bad:
        r = await sb.http.post(f"/sandbox/users/{who}/{action}", json=body)
        assert r.status_code == code, (action, body, r.text)
    # Nothing was recorded and nothing pushed.
    assert await sb.get(f"/sandbox/users/{uid}/subscriptions", appid=MP["appid"]) == []
    assert pushes(gateway, MP) == []
    # Three templates at once is fine.
    await popup(sb, user, MP, dict.fromkeys(once, "accept"))
    assert [s["remaining"] for s in await sb.get(f"/sandbox/users/{uid}/subscriptions", appid=MP["appid"])] == [1] * 3


async def test_turning_a_template_off_revokes_what_is_left(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()
    paid = await template(sb, MP, "order_paid", "subscribe_once")
    for _ in range(2):
        await popup(sb, user, MP, {paid["template_id"]: "accept"})
    changed = await sb.control(user, "subscribe-change", {"appid": MP["appid"], "template_ids": [paid["template_id"]]})
    assert changed["status"] == 200 and changed["subscriptions"][0]["remaining"] == 0
    (event,) = pushes(gateway, MP, "subscribe_msg_change_event")
    assert event["List"] == {"TemplateId": paid["template_id"], "SubscribeStatusString": "reject"}
    send = {"touser": oid(user, MP), "template_id": paid["template_id"], "data": data("order_paid")}
    assert (await sb.wx(SUBSCRIBE_SEND, send, MP))["errcode"] == 43101
    await popup(sb, user, MP, {paid["template_id"]: "accept"})  # a new acceptance counts again
    assert (await sb.wx(SUBSCRIBE_SEND, send, MP))["errcode"] == 0


# -- service-account subscription notices -----------------------------------------------------------


async def test_subscription_notices_one_time_and_long_term(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()  # a subscription notice does not need a follower
    refund = await template(sb, OA, "refund", "subscribe_once")
    points = await template(sb, OA, "points_earned", "subscribe_long")
    await popup(sb, user, OA, {refund["template_id"]: "accept", points["template_id"]: "accept"})
    await popup(sb, user, OA, {refund["template_id"]: "reject"}, popup_scene=2)
    first, second = pushes(gateway, OA, "subscribe_msg_popup_event")
    assert first["SubscribeMsgPopupEvent"]["List"] == [
        {"TemplateId": refund["template_id"], "SubscribeStatusString": "accept", "PopupScene": "1"},
        {"TemplateId": points["template_id"], "SubscribeStatusString": "accept", "PopupScene": "1"},
    ]
    assert second["SubscribeMsgPopupEvent"]["List"] == {
        "TemplateId": refund["template_id"],
        "SubscribeStatusString": "reject",
        "PopupScene": "2",
    }

    notice = {"touser": oid(user), "template_id": refund["template_id"], "page": "https://brand.test/refunds/9",
              "miniprogram": {"appid": MP["appid"], "path": "pages/refund/index?id=9"}, "data": data("refund")}  # fmt: skip
    sent = await sb.wx(BIZSEND, notice)
    assert (sent["errcode"], sent["errmsg"]) == (0, "ok")
    assert (await sb.wx(BIZSEND, notice))["errcode"] == 43101  # one-time, and the later reject took nothing back
    (result,) = pushes(gateway, OA, "subscribe_msg_sent_event")
    assert result["SubscribeMsgSentEvent"]["List"] == {
        "TemplateId": refund["template_id"],
        "MsgID": str(sent["msgid"]),
        "ErrorCode": "0",
        "ErrorStatus": "success",
    }

    long_term = {"touser": oid(user), "template_id": points["template_id"], "data": data("points_earned"),
                 "page": "https://brand.test/points?campaign_id=7"}  # fmt: skip
    assert [(await sb.wx(BIZSEND, long_term))["errcode"] for _ in range(3)] == [0, 0, 0]
    await sb.control(user, "subscribe-change", {"appid": OA["appid"], "template_ids": [points["template_id"]]})
    (change,) = pushes(gateway, OA, "subscribe_msg_change_event")
    assert change["SubscribeMsgChangeEvent"]["List"] == {
        "TemplateId": points["template_id"],
        "SubscribeStatusString": "reject",
    }
    assert (await sb.wx(BIZSEND, long_term))["errcode"] == 43101
    await popup(sb, user, OA, {points["template_id"]: "accept"})
    assert (await sb.wx(BIZSEND, long_term))["errcode"] == 0

    entries = await inbox(sb, user)
    assert [m["kind"] for m in entries] == ["subscribe_notice"] * 5
    assert entries[0]["jump"] == {
        "url": "https://brand.test/refunds/9",
        "miniprogram": {"appid": MP["appid"], "pagepath": "pages/refund/index?id=9"},
    }
    assert (await sb.control(user, "open", {"seq": 1}))["pagepath"] == "pages/refund/index?id=9"
    by_url = await sb.control(user, "open", {"seq": 2})
    assert by_url == {
        "seq": 2,
        "kind": "subscribe_notice",
        "appid": OA["appid"],
        "opened_at": int(T0),
        "opened": "url",
        "url": "https://brand.test/points?campaign_id=7",
        "query": {"campaign_id": "7"},
    }


async def test_subscription_notice_errors(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()
    refund = await template(sb, OA, "refund", "subscribe_once")
    await popup(sb, user, OA, {refund["template_id"]: "accept"})
    ok = {"touser": oid(user), "template_id": refund["template_id"], "data": data("refund")}
    template_message = await template(sb, OA, "refund")
    mp_notice = await template(sb, MP, "refund", "subscribe_once")
    for body, app, errcode in [
        ({**ok, "template_id": template_message["template_id"]}, OA, 40037),
        ({**ok, "template_id": mp_notice["template_id"]}, OA, 40037),
        ({**ok, "touser": oid(user, MP)}, OA, 40003),
        ({**ok, "data": data("refund", character_string1="")}, OA, 47003),
        ({**ok, "miniprogram": {"appid": SHOP["appid"], "pagepath": "x"}}, OA, 40166),
        (ok, MP, 48001),
    ]:
        assert (await sb.wx(BIZSEND, body, app))["errcode"] == errcode, body
    assert await inbox(sb, user) == []
    assert (await sb.wx(BIZSEND, ok))["errcode"] == 0


# -- the inbox --------------------------------------------------------------------------------------


async def test_customer_service_entries_have_data_and_an_empty_jump(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower()
    await sb.wx("/cgi-bin/message/custom/send", {"touser": oid(user), "msgtype": "text", "text": {"content": "hi"}})
    (entry,) = await inbox(sb, user)
    assert (entry["kind"], entry["data"], entry["jump"], entry["opens"]) == (
        "customer_service",
        {"content": "hi"},
        {},
        0,
    )
    r = await sb.http.post(f"/sandbox/users/{user['user_id']}/open", json={"seq": 1})
    assert r.status_code == 409
    assert (await inbox(sb, user))[0]["opened_at"] is None


async def test_a_popup_answers_what_the_gateway_said(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.user()
    paid = (await template(sb, MP, "order_paid", "subscribe_once"))["template_id"]
    callbacks(gateway, MP, httpx.Response(503, text="busy"))
    answer = await popup(sb, user, MP, {paid: "accept"})
    assert (answer["status"], answer["body"], answer["attempts"]) == (503, "busy", 1)
    # The user did accept: the authorisation stands whatever the gateway answered.
    assert answer["subscriptions"][0]["remaining"] == 1
    route = callbacks(gateway, MP, httpx.Response(503), httpx.Response(503), httpx.Response(200, text="success"))
    body = {"appid": MP["appid"], "results": {paid: "accept"}}
    retried = await sb.post(f"/sandbox/users/{user['user_id']}/subscribe-popup", body, retry=1)
    assert (retried["status"], retried["attempts"]) == (200, 3)
    assert len({c.request.content for c in route.calls[-3:]}) == 1  # WeChat re-sends the identical bytes


def gateway_view(request: httpx.Request, app: dict[str, str]) -> Any:
    """A push as the gateway reads it: decrypted (wechatpy), decoded by shared.wechat.codec, parsed by
    shared.wechat.push."""
    q = query(request)
    crypto = WeChatCrypto(app["token"], app["encoding_aes_key"], app["appid"])
    if app.get("push_format") == "json":
        envelope = json.loads(request.content)
        xml_envelope = f"<xml><Encrypt><![CDATA[{envelope['Encrypt']}]]></Encrypt></xml>"
        plaintext = crypto.decrypt_message(xml_envelope, q["msg_signature"], q["timestamp"], q["nonce"])
        payload = codec.parse_json(plaintext.encode())
    else:
        plaintext = crypto.decrypt_message(request.content, q["msg_signature"], q["timestamp"], q["nonce"])
        payload = codec.parse_xml(plaintext.encode())
    kind = AppKind.MINI_PROGRAM if app["kind"] == "mini_program" else AppKind.OFFICIAL_ACCOUNT
    return parse_push(payload, kind)


async def test_the_gateway_parser_reads_every_messaging_push(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower()
    for app in (OA, MP, MP_XML):
        kind = "subscribe_long" if app is OA else "subscribe_once"
        name = "points_earned" if app is OA else "refund"
        tid = (await template(sb, app, name, kind))["template_id"]
        other = (await template(sb, app, "activity", "subscribe_once"))["template_id"]
        await popup(sb, user, app, {tid: "accept", other: "reject"})
        path = BIZSEND if app is OA else SUBSCRIBE_SEND
        sent = await sb.wx(path, {"touser": oid(user, app), "template_id": tid, "data": data(name)}, app)
        await sb.control(user, "subscribe-change", {"appid": app["appid"], "template_ids": [tid, other]})
        calls = [c.request for c in gateway.calls if c.request.url.path.endswith(app["appid"])]
        popup_push, sent_push, change_push = (gateway_view(r, app) for r in calls[-3:])
        assert isinstance(popup_push, SubscribeMsgEvent) and popup_push.event_type.endswith("popup_event")
        assert [(i.template_id, i.subscribe_status, i.popup_scene) for i in popup_push.items] == [
            (tid, "accept", "1" if app is OA else "0"),
            (other, "reject", "1" if app is OA else "0"),
        ]
        assert isinstance(sent_push, SubscribeMsgEvent)
        (sent_item,) = sent_push.items
        assert (sent_item.template_id, sent_item.msg_id, sent_item.error_code, sent_item.error_status) == (
            tid,
            str(sent["msgid"]),
            "0",
            "success",
        )
        assert isinstance(change_push, SubscribeMsgEvent)
        assert [(i.template_id, i.subscribe_status) for i in change_push.items] == [(tid, "reject"), (other, "reject")]
    paid = await template(sb, OA, "order_paid")
    sent = await sb.wx(
        TEMPLATE_SEND, {"touser": oid(user), "template_id": paid["template_id"], "data": data("order_paid")}
    )
    finish = gateway_view(gateway.calls[-1].request, OA)
    assert isinstance(finish, TemplateSendJobFinishEvent)
    assert (finish.event_type, finish.msg_id, finish.status) == (
        "wechat.oa.templatesendjobfinish",
        str(sent["msgid"]),
        "success",
    )
