"""The sandbox's identity and official-account APIs: phone numbers, UnionID binding, user tags, menus.

Same harness as test_sandbox.py (in-process sandbox, respx for the gateway), with a second
mini-program that pushes XML so both push formats are covered. ``Harness`` and the app constants
are reused by test_sandbox_messaging.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from shared.wechat.apps import WeChatApps
from tests.integration.test_sandbox import GATEWAY, MP, OA, PLAIN_OA, SHOP, T0, FakeClock, callbacks
from tools.wechat_sandbox import create_app

MP_XML = {
    "name": "test-mp-xml",
    "kind": "mini_program",
    "appid": "wx00000000000000e5",
    "secret": "mp-xml-secret",
    "original_id": "gh_0000000000e5",
    "token": "mpxmltoken",
    "encoding_aes_key": "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj",
}
APPS = WeChatApps.model_validate({"apps": [OA, MP, SHOP, PLAIN_OA, MP_XML]})
CJK = "标"  # 3 bytes in UTF-8


class Harness:
    """An in-process sandbox with a fake clock, and shortcuts for both of its APIs."""

    def __init__(self, seed: int = 0) -> None:
        self.clock = FakeClock()
        self.app = create_app(APPS, GATEWAY, seed=seed, clock=self.clock)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://sandbox.test")

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.app.state.pusher.aclose()

    async def post(self, path: str, body: Any = None, **params: Any) -> Any:
        r = await self.http.post(path, json=body, params=params)
        assert r.status_code in (200, 201), r.text
        return r.json()

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.http.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    async def token(self, app: dict[str, str] = OA) -> str:
        """A valid token now (stable_token hands back the same one while it lives, as services do)."""
        body = {"grant_type": "client_credential", "appid": app["appid"], "secret": app["secret"]}
        return (await self.post("/cgi-bin/stable_token", body))["access_token"]  # type: ignore[no-any-return]

    async def wx(self, path: str, body: Any = None, app: dict[str, str] = OA) -> Any:
        """POST a WeChat API with ``app``'s token."""
        return await self.post(path, body, access_token=await self.token(app))

    async def wx_get(self, path: str, app: dict[str, str] = OA, **params: Any) -> Any:
        return await self.get(path, access_token=await self.token(app), **params)

    async def user(self, **body: Any) -> dict[str, Any]:
        return await self.post("/sandbox/users", body)  # type: ignore[no-any-return]

    async def follower(self, app: dict[str, str] = OA, **body: Any) -> dict[str, Any]:
        user = await self.user(**body)
        await self.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": app["appid"]})
        return user

    async def control(self, user: dict[str, Any], action: str, body: Any = None) -> Any:
        return await self.post(f"/sandbox/users/{user['user_id']}/{action}", body)


@pytest.fixture
async def sb() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.aclose()


@pytest.fixture
def gateway() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=GATEWAY, assert_all_called=False) as router:
        for app in APPS.apps:
            callbacks(router, {"appid": app.appid})
        yield router


def oid(user: dict[str, Any], app: dict[str, str] = OA) -> str:
    return user["openids"][app["appid"]]  # type: ignore[no-any-return]


# -- phone numbers --------------------------------------------------------------------------------


async def _phone(sb: Harness, code: str, app: dict[str, str] = MP, **extra: Any) -> dict[str, Any]:
    return await sb.wx("/wxa/business/getuserphonenumber", {"code": code, **extra}, app)  # type: ignore[no-any-return]


async def test_phone_code_reveals_the_users_number_once(sb: Harness) -> None:
    user = await sb.user(phone="13912345678")
    assert user["phone"] == "13912345678"
    sb.clock.advance(5)
    code = (await sb.control(user, "phone-code", {"appid": MP["appid"]}))["code"]
    assert len(code) == 64
    sb.clock.advance(30)
    assert await _phone(sb, code) == {
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": "13912345678",
            "purePhoneNumber": "13912345678",
            "countryCode": "86",
            "watermark": {"timestamp": int(T0) + 5, "appid": MP["appid"]},
        },
    }
    assert await _phone(sb, code) == {"errcode": 40163, "errmsg": "code been used"}


async def test_phone_codes_expire_and_belong_to_their_app(sb: Harness) -> None:
    user = await sb.user()
    assert (await _phone(sb, "f" * 64))["errcode"] == 40029
    assert (await sb.wx("/wxa/business/getuserphonenumber", {}, MP))["errcode"] == 41008
    code = (await sb.control(user, "phone-code", {"appid": MP["appid"]}))["code"]
    assert (await _phone(sb, code, MP_XML))["errcode"] == 40029  # another mini-program's code
    assert (await _phone(sb, code, OA))["errcode"] == 48001  # not a mini-program token
    sb.clock.advance(300)
    assert (await _phone(sb, code))["errcode"] == 40029
    fresh = (await sb.control(user, "phone-code", {"appid": MP["appid"]}))["code"]
    sb.clock.advance(299)
    assert (await _phone(sb, fresh))["errcode"] == 0
    r = await sb.http.post(f"/sandbox/users/{user['user_id']}/phone-code", json={"appid": OA["appid"]})
    assert r.status_code == 400  # the getPhoneNumber button exists only in mini-programs


async def test_phone_code_checks_the_optional_openid_without_spending_the_code(sb: Harness) -> None:
    user, other = await sb.user(), await sb.user()
    code = (await sb.control(user, "phone-code", {"appid": MP["appid"]}))["code"]
    assert (await _phone(sb, code, openid=oid(other, MP)))["errcode"] == 40003
    answer = await _phone(sb, code, openid=oid(user, MP))
    assert answer["phone_info"]["purePhoneNumber"] == user["phone"]


async def test_seeded_and_foreign_phone_numbers(sb: Harness) -> None:
    seeded = await sb.user()
    assert seeded["phone"].startswith("138")
    assert len(seeded["phone"]) == 11
    assert seeded["country_code"] == "86"
    foreign = await sb.user(phone="91234567", country_code="852")
    code = (await sb.control(foreign, "phone-code", {"appid": MP["appid"]}))["code"]
    info = (await _phone(sb, code))["phone_info"]
    assert (info["phoneNumber"], info["purePhoneNumber"], info["countryCode"]) == ("+85291234567", "91234567", "852")
    r = await sb.http.post("/sandbox/users", json={"phone": "138-0013"})
    assert r.status_code == 422


async def test_seeded_phones_codes_and_menu_ids_are_reproducible() -> None:
    runs = []
    for seed in (3, 3, 4):
        sb = Harness(seed)
        try:
            users = [await sb.user() for _ in range(2)]
            code = (await sb.control(users[0], "phone-code", {"appid": MP["appid"]}))["code"]
            await sb.wx("/cgi-bin/menu/create", {"button": [{"type": "click", "name": "a", "key": "A"}]})
            menuid = (await sb.wx("/cgi-bin/menu/addconditional", _conditional("A", 2)))["menuid"]
            runs.append(([u["phone"] for u in users], code, menuid))
        finally:
            await sb.aclose()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert runs[0][0][0] != runs[0][0][1]


# -- UnionID binding ------------------------------------------------------------------------------


async def _login(sb: Harness, user: dict[str, Any]) -> dict[str, Any]:
    code = (await sb.control(user, "login-code", {"appid": MP["appid"]}))["code"]
    params = {"appid": MP["appid"], "secret": MP["secret"], "js_code": code, "grant_type": "authorization_code"}
    return await sb.get("/sns/jscode2session", **params)  # type: ignore[no-any-return]


async def test_bind_unionid_for_one_app_then_all(sb: Harness, gateway: respx.MockRouter) -> None:
    user = await sb.follower(unionid_bound=False)
    assert user["unionid_bound"] is False
    info = await sb.wx_get("/cgi-bin/user/info", openid=oid(user))
    assert "unionid" not in info
    assert "unionid" not in await _login(sb, user)

    bound = await sb.control(user, "bind-unionid", {"appid": MP["appid"]})
    assert (bound["unionid_bound"], bound["unionid_bound_apps"]) == (False, [MP["appid"]])
    assert (await _login(sb, user))["unionid"] == user["unionid"]
    assert "unionid" not in await sb.wx_get("/cgi-bin/user/info", openid=oid(user))

    everything = await sb.control(user, "bind-unionid")
    assert everything["unionid_bound"] is True
    assert (await sb.wx_get("/cgi-bin/user/info", openid=oid(user)))["unionid"] == user["unionid"]
    assert (await sb.get(f"/sandbox/users/{user['user_id']}"))["unionid_bound"] is True


async def test_bind_unionid_rejects_unknown_users_and_apps(sb: Harness) -> None:
    user = await sb.user(unionid_bound=False)
    r = await sb.http.post(f"/sandbox/users/{user['user_id']}/bind-unionid", json={"appid": "wx00000000000000ff"})
    assert r.status_code == 404
    assert (await sb.http.post("/sandbox/users/u9999/bind-unionid")).status_code == 404
    assert (await sb.get(f"/sandbox/users/{user['user_id']}"))["unionid_bound_apps"] == []


# -- user tags ------------------------------------------------------------------------------------


async def test_tag_lifecycle(sb: Harness, gateway: respx.MockRouter) -> None:
    created = await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "广东"}})
    assert created == {"tag": {"id": 100, "name": "广东"}}
    second = (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "VIP"}}))["tag"]["id"]
    assert second == 101
    user = await sb.follower()
    assert await sb.wx("/cgi-bin/tags/members/batchtagging", {"openid_list": [oid(user)], "tagid": 100}) == {
        "errcode": 0,
        "errmsg": "ok",
    }
    assert await sb.wx_get("/cgi-bin/tags/get") == {
        "tags": [
            {"id": 2, "name": "星标组", "count": 0},
            {"id": 100, "name": "广东", "count": 1},
            {"id": 101, "name": "VIP", "count": 0},
        ]
    }
    assert (await sb.wx("/cgi-bin/tags/update", {"tag": {"id": 100, "name": "广东人"}}))["errcode"] == 0
    assert (await sb.wx("/cgi-bin/tags/update", {"tag": {"id": 100, "name": "广东人"}}))["errcode"] == 0  # same name
    assert (await sb.wx("/cgi-bin/tags/update", {"tag": {"id": 101, "name": "广东人"}}))["errcode"] == 45157
    assert (await sb.wx("/cgi-bin/tags/update", {"tag": {"id": 2, "name": "x"}}))["errcode"] == 45058
    assert (await sb.wx("/cgi-bin/tags/update", {"tag": {"id": 999, "name": "x"}}))["errcode"] == 45159
    assert (await sb.wx("/cgi-bin/tags/delete", {"tag": {"id": 1}}))["errcode"] == 45058
    assert (await sb.wx("/cgi-bin/tags/delete", {"tag": {"id": 100}}))["errcode"] == 0
    assert (await sb.wx("/cgi-bin/tags/delete", {"tag": {"id": 100}}))["errcode"] == 45159
    assert (await sb.wx("/cgi-bin/tags/getidlist", {"openid": oid(user)})) == {"tagid_list": []}
    assert [t["id"] for t in (await sb.wx_get("/cgi-bin/tags/get"))["tags"]] == [2, 101]


@pytest.mark.parametrize(
    ("name", "errcode"),
    [("", 45157), ("  ", 45157), (CJK * 10, 0), (CJK * 11, 45158), ("a" * 30, 0), ("a" * 31, 45158), (7, 45157)],
)
async def test_tag_names(sb: Harness, name: Any, errcode: int) -> None:
    answer = await sb.wx("/cgi-bin/tags/create", {"tag": {"name": name}})
    assert answer.get("errcode", 0) == errcode


async def test_at_most_100_tags_and_no_duplicates(sb: Harness) -> None:
    for i in range(100):
        assert "tag" in await sb.wx("/cgi-bin/tags/create", {"tag": {"name": f"t{i}"}})
    assert (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "one more"}})) == {
        "errcode": 45056,
        "errmsg": "too many tag now, no need to add new",
    }
    assert (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "t5"}}))["errcode"] == 45157
    assert (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "星标组"}}))["errcode"] == 45157


async def test_batch_tagging_rules(sb: Harness, gateway: respx.MockRouter) -> None:
    tag = (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "VIP"}}))["tag"]["id"]
    fans = [await sb.follower() for _ in range(2)]
    stranger = await sb.user()
    path = "/cgi-bin/tags/members/batchtagging"

    assert (await sb.wx(path, {"openid_list": [oid(fans[0])] * 51, "tagid": tag}))["errcode"] == 40032
    assert (await sb.wx(path, {"openid_list": [], "tagid": tag}))["errcode"] == 40032
    assert (await sb.wx(path, {"openid_list": [oid(fans[0])], "tagid": 555}))["errcode"] == 45159
    assert (await sb.wx(path, {"openid_list": [oid(fans[0])], "tagid": 0}))["errcode"] == 45159
    # One bad openid fails the whole call: nobody is tagged.
    assert (await sb.wx(path, {"openid_list": [oid(fans[0]), oid(stranger)], "tagid": tag}))["errcode"] == 40003
    assert (await sb.wx(path, {"openid_list": [oid(fans[0]), oid(fans[1], MP)], "tagid": tag})) == {
        "errcode": 49003,
        "errmsg": "not match openid with appid",
    }
    assert (await sb.wx(path, {"openid_list": ["o" + "x" * 27], "tagid": tag}))["errcode"] == 40003
    assert (await sb.wx("/cgi-bin/tags/getidlist", {"openid": oid(fans[0])})) == {"tagid_list": []}

    both = [oid(fans[0]), oid(fans[1]), oid(fans[0])]
    assert (await sb.wx(path, {"openid_list": both, "tagid": str(tag)}))["errcode"] == 0
    assert (await sb.wx(path, {"openid_list": [oid(fans[0])], "tagid": 2}))["errcode"] == 0  # 星标组
    assert await sb.wx("/cgi-bin/tags/getidlist", {"openid": oid(fans[0])}) == {"tagid_list": [tag, 2]}
    assert (await sb.wx_get("/cgi-bin/user/info", openid=oid(fans[0])))["tagid_list"] == [tag, 2]
    assert (await sb.wx("/cgi-bin/tags/getidlist", {"openid": oid(stranger)}))["errcode"] == 40003

    untag = "/cgi-bin/tags/members/batchuntagging"
    assert (await sb.wx(untag, {"openid_list": [oid(fans[0])], "tagid": tag}))["errcode"] == 0
    assert await sb.wx("/cgi-bin/tags/getidlist", {"openid": oid(fans[0])}) == {"tagid_list": [2]}
    assert (await sb.wx(untag, {"openid_list": [oid(fans[0])] * 51, "tagid": tag}))["errcode"] == 40032
    assert (await sb.wx(untag, {"openid_list": [oid(fans[0])], "tagid": 999}))["errcode"] == 45159


async def test_a_user_carries_at_most_20_tags(sb: Harness, gateway: respx.MockRouter) -> None:
    user, other = await sb.follower(), await sb.follower()
    path = "/cgi-bin/tags/members/batchtagging"
    ids = [(await sb.wx("/cgi-bin/tags/create", {"tag": {"name": f"t{i}"}}))["tag"]["id"] for i in range(21)]
    for tag in ids[:20]:
        assert (await sb.wx(path, {"openid_list": [oid(user)], "tagid": tag}))["errcode"] == 0
    assert (await sb.wx(path, {"openid_list": [oid(user)], "tagid": ids[0]}))["errcode"] == 0  # already has it
    assert (await sb.wx(path, {"openid_list": [oid(other), oid(user)], "tagid": ids[20]})) == {
        "errcode": 45059,
        "errmsg": "can not tagging one user too much",
    }
    assert (await sb.wx("/cgi-bin/tags/getidlist", {"openid": oid(other)})) == {"tagid_list": []}


async def test_tag_fans_are_paged_in_tagging_order(sb: Harness, gateway: respx.MockRouter) -> None:
    tag = (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "VIP"}}))["tag"]["id"]
    fans = [await sb.follower() for _ in range(3)]
    order = [oid(fans[2]), oid(fans[0]), oid(fans[1])]
    await sb.wx("/cgi-bin/tags/members/batchtagging", {"openid_list": order, "tagid": tag})
    first = await sb.wx("/cgi-bin/user/tag/get", {"tagid": tag, "next_openid": ""})
    assert first == {"count": 3, "data": {"openid": order}, "next_openid": order[-1]}
    after_one = await sb.wx("/cgi-bin/user/tag/get", {"tagid": tag, "next_openid": order[0]})
    assert after_one["data"]["openid"] == order[1:]
    assert await sb.wx("/cgi-bin/user/tag/get", {"tagid": tag, "next_openid": order[-1]}) == {
        "count": 0,
        "next_openid": "",
    }
    assert (await sb.wx("/cgi-bin/user/tag/get", {"tagid": 404}))["errcode"] == 45159


async def test_unfollowing_drops_the_users_tags(sb: Harness, gateway: respx.MockRouter) -> None:
    tag = (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "VIP"}}))["tag"]["id"]
    user = await sb.follower()
    await sb.wx("/cgi-bin/tags/members/batchtagging", {"openid_list": [oid(user)], "tagid": tag})
    await sb.control(user, "unfollow", {"appid": OA["appid"]})
    assert (await sb.wx_get("/cgi-bin/tags/get"))["tags"][-1] == {"id": tag, "name": "VIP", "count": 0}
    assert (await sb.wx("/cgi-bin/tags/getidlist", {"openid": oid(user)}))["errcode"] == 40003


async def test_tag_apis_check_the_token_kind_and_the_body(sb: Harness) -> None:
    assert (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "x"}}, MP))["errcode"] == 48001
    assert (await sb.wx_get("/cgi-bin/tags/get", SHOP))["errcode"] == 48001
    token = await sb.token()
    for content, errcode in ((b"", 44002), (b"{nope", 47001), (b"[1]", 47001), (b'{"tag": "x"}', 47001)):
        r = await sb.http.post("/cgi-bin/tags/create", params={"access_token": token}, content=content)
        assert (r.status_code, r.json()["errcode"]) == (200, errcode)
    r = await sb.http.post("/cgi-bin/tags/create", json={"tag": {"name": "x"}})
    assert r.json()["errcode"] == 41001


# -- menus ----------------------------------------------------------------------------------------

DEFAULT: list[dict[str, Any]] = [
    {"type": "click", "name": "今日歌曲", "key": "V1001_TODAY_MUSIC"},
    {
        "name": "菜单",
        "sub_button": [
            {"type": "view", "name": "搜索", "url": "http://www.soso.com/"},
            {"type": "miniprogram", "name": "小程序", "url": "http://x.test", "appid": MP["appid"], "pagepath": "p"},
        ],
    },
]


def _conditional(key: str, tag_id: int | str) -> dict[str, Any]:
    return {"button": [{"type": "click", "name": key, "key": key}], "matchrule": {"tag_id": str(tag_id)}}


def _click(key: str) -> dict[str, Any]:
    return {"type": "click", "name": key, "key": key}


@pytest.mark.parametrize(
    ("button", "errcode"),
    [
        ([], 40016),
        ([_click("a")] * 4, 40016),
        ("nope", 40016),
        ([{"name": "p", "sub_button": [_click("s")] * 6}], 40023),
        ([{"type": "tap", "name": "a", "key": "A"}], 40017),
        ([{"name": "a"}], 40017),
        ([{"type": "click", "name": "a" * 17, "key": "A"}], 40018),
        ([{"type": "click", "name": "", "key": "A"}], 40018),
        ([{"type": "click", "name": "a"}], 40019),
        ([{"type": "click", "name": "a", "key": "k" * 129}], 40019),
        ([{"type": "view", "name": "a"}], 40020),
        ([{"name": "p", "sub_button": [{"type": "tap", "name": "s", "key": "S"}]}], 40024),
        ([{"name": "p", "sub_button": [{"type": "click", "name": "s" * 61, "key": "S"}]}], 40025),
        ([{"name": "p", "sub_button": [{"type": "click", "name": "s"}]}], 40026),
        ([{"name": "p", "sub_button": [{"type": "view", "name": "s", "url": "u" * 1025}]}], 40027),
        ([{"type": "click", "name": CJK * 5, "key": "A"}], 0),  # 15 bytes
        ([{"type": "click", "name": CJK * 6, "key": "A"}], 40018),  # 18 bytes: over 16
        ([_click("a"), {"name": "p", "sub_button": [_click(f"s{i}") for i in range(5)]}], 0),
        ([{"type": "media_id", "name": "m", "media_id": "M"}], 0),
    ],
)
async def test_menu_create_validates_buttons(sb: Harness, button: Any, errcode: int) -> None:
    answer = await sb.wx("/cgi-bin/menu/create", {"button": button})
    assert answer["errcode"] == errcode


async def test_default_and_conditional_menus(sb: Harness, gateway: respx.MockRouter) -> None:
    assert await sb.wx_get("/cgi-bin/menu/get") == {"errcode": 46003, "errmsg": "menu no exist"}
    assert (await sb.wx("/cgi-bin/menu/addconditional", _conditional("A", 2)))["errcode"] == 65303
    assert await sb.wx("/cgi-bin/menu/create", {"button": DEFAULT}) == {"errcode": 0, "errmsg": "ok"}
    menu = await sb.wx_get("/cgi-bin/menu/get")
    assert menu == {
        "menu": {
            "button": [
                {"type": "click", "name": "今日歌曲", "key": "V1001_TODAY_MUSIC", "sub_button": []},
                {"name": "菜单", "sub_button": [{**s, "sub_button": []} for s in DEFAULT[1]["sub_button"]]},
            ]
        }
    }
    no_rule = {"button": [_click("a")], "matchrule": {}}
    assert await sb.wx("/cgi-bin/menu/addconditional", no_rule) == {"errcode": 65304, "errmsg": "match rule empty"}
    assert (await sb.wx("/cgi-bin/menu/addconditional", {"button": [_click("a")]}))["errcode"] == 65304
    privacy = {"button": [_click("a")], "matchrule": {"tag_id": "2", "sex": "1"}}
    assert (await sb.wx("/cgi-bin/menu/addconditional", privacy))["errcode"] == 65320
    bad_buttons = {"button": [_click("a")] * 4, "matchrule": {"tag_id": "2"}}
    assert (await sb.wx("/cgi-bin/menu/addconditional", bad_buttons))["errcode"] == 40016

    vip = (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "VIP"}}))["tag"]["id"]
    gold = (await sb.wx("/cgi-bin/tags/create", {"tag": {"name": "GOLD"}}))["tag"]["id"]
    vip_menu = await sb.wx("/cgi-bin/menu/addconditional", _conditional("VIP", vip))
    assert set(vip_menu) == {"menuid"}
    assert vip_menu["menuid"].isdigit()
    gold_menu = (await sb.wx("/cgi-bin/menu/addconditional", _conditional("GOLD", gold)))["menuid"]
    full = await sb.wx_get("/cgi-bin/menu/get")
    assert isinstance(full["menu"]["menuid"], int)
    assert [(m["menuid"], m["matchrule"]) for m in full["conditionalmenu"]] == [
        (int(vip_menu["menuid"]), {"tag_id": str(vip)}),
        (int(gold_menu), {"tag_id": str(gold)}),
    ]

    plain, vip_user, both = [await sb.follower() for _ in range(3)]
    tagging = "/cgi-bin/tags/members/batchtagging"
    await sb.wx(tagging, {"openid_list": [oid(vip_user), oid(both)], "tagid": vip})
    await sb.wx(tagging, {"openid_list": [oid(both)], "tagid": gold})

    async def keys(user: dict[str, Any]) -> list[str]:
        seen = await sb.wx("/cgi-bin/menu/trymatch", {"user_id": oid(user)})
        control = await sb.get(f"/sandbox/users/{user['user_id']}/menu", appid=OA["appid"])
        assert control["button"] == seen["button"]
        return [b.get("key", b["name"]) for b in seen["button"]]

    assert await keys(plain) == ["V1001_TODAY_MUSIC", "菜单"]
    assert await keys(vip_user) == ["VIP"]
    assert await keys(both) == ["GOLD"]  # the newest matching conditional menu wins
    control = await sb.get(f"/sandbox/users/{both['user_id']}/menu", appid=OA["appid"])
    assert (control["conditional"], control["menuid"], control["matchrule"]) == (
        True,
        int(gold_menu),
        {"tag_id": str(gold)},
    )

    assert await sb.wx("/cgi-bin/menu/delconditional", {"menuid": gold_menu}) == {"errcode": 0, "errmsg": "ok"}
    assert await keys(both) == ["VIP"]
    assert (await sb.wx("/cgi-bin/menu/delconditional", {"menuid": gold_menu}))["errcode"] == 65301
    assert (await sb.wx("/cgi-bin/menu/trymatch", {"user_id": "o" + "x" * 27}))["errcode"] == 65302
    assert (await sb.wx("/cgi-bin/menu/trymatch", {"user_id": oid(plain, MP)}))["errcode"] == 65302

    assert (await sb.wx_get("/cgi-bin/menu/delete"))["errcode"] == 0
    assert (await sb.wx("/cgi-bin/menu/trymatch", {"user_id": oid(plain)}))["errcode"] == 46003
    control = await sb.get(f"/sandbox/users/{plain['user_id']}/menu", appid=OA["appid"])
    assert control == {"button": None, "menuid": None, "conditional": False, "matchrule": None}


async def test_current_selfmenu_info_nests_sub_buttons_in_a_list(sb: Harness) -> None:
    assert await sb.wx_get("/cgi-bin/get_current_selfmenu_info") == {"is_menu_open": 0}
    await sb.wx("/cgi-bin/menu/create", {"button": DEFAULT})
    info = await sb.wx_get("/cgi-bin/get_current_selfmenu_info")
    assert info == {
        "is_menu_open": 1,
        "selfmenu_info": {"button": [DEFAULT[0], {"name": "菜单", "sub_button": {"list": DEFAULT[1]["sub_button"]}}]},
    }


async def test_menu_apis_are_official_account_apis(sb: Harness) -> None:
    assert (await sb.wx("/cgi-bin/menu/create", {"button": DEFAULT}, MP))["errcode"] == 48001
    assert (await sb.wx("/cgi-bin/menu/trymatch", {"user_id": "x"}, SHOP))["errcode"] == 48001
    user = await sb.user()
    r = await sb.http.get(f"/sandbox/users/{user['user_id']}/menu", params={"appid": MP["appid"]})
    assert r.status_code == 400


async def test_wrong_method_answers_like_wechat(sb: Harness) -> None:
    token = await sb.token()
    r = await sb.http.get("/cgi-bin/tags/create", params={"access_token": token})
    assert (r.status_code, r.json()) == (200, {"errcode": 43002, "errmsg": "require POST method"})
    r = await sb.http.post("/cgi-bin/tags/get", params={"access_token": token})
    assert (r.status_code, r.json()) == (200, {"errcode": 43001, "errmsg": "require GET method"})
    assert (await sb.http.get("/sandbox/push")).status_code == 405  # control routes stay plain HTTP
    assert (await sb.http.get("/sandbox/nowhere")).status_code == 404


async def test_openapi_documents_the_new_routes(sb: Harness) -> None:
    spec = await sb.get("/openapi.json")
    for path in (
        "/wxa/business/getuserphonenumber",
        "/cgi-bin/message/custom/send",
        "/cgi-bin/tags/members/batchtagging",
        "/cgi-bin/menu/trymatch",
    ):
        post = spec["paths"][path]["post"]
        assert post["description"]
        assert "example" in post["requestBody"]["content"]["application/json"]
    for path in (
        "/sandbox/users/{user_id}/phone-code",
        "/sandbox/users/{user_id}/bind-unionid",
        "/sandbox/users/{user_id}/menu",
        "/sandbox/shop/push",
        "/sandbox/shop/callback",
    ):
        assert path in spec["paths"]
