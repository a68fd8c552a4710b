"""The WeChat sandbox behaves like WeChat: token rules, login codes, user info, signed pushes.

The sandbox runs in-process behind an ASGI transport; its pushes to the gateway are caught by
respx. wechatpy is the independent oracle for signatures and encryption.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import check_signature

from shared.wechat.apps import WeChatApps
from tools.wechat_sandbox import create_app

GATEWAY = "http://gateway.test"
T0 = 1_700_000_000.0

OA = {
    "name": "test-oa",
    "kind": "official_account",
    "appid": "wx00000000000000a1",
    "secret": "oa-secret",
    "original_id": "gh_0000000000a1",
    "token": "oatoken",
    "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
}
MP = {
    "name": "test-mp",
    "kind": "mini_program",
    "appid": "wx00000000000000b2",
    "secret": "mp-secret",
    "original_id": "gh_0000000000b2",
    "token": "mptoken",
    "encoding_aes_key": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq",
    "push_format": "json",
}
SHOP = {
    "name": "test-shop",
    "kind": "shop",
    "appid": "wx00000000000000c3",
    "secret": "shop-secret",
    "original_id": "gh_0000000000c3",
    "token": "shoptoken",
    "encoding_aes_key": "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
}
PLAIN_OA = {
    "name": "test-plain-oa",
    "kind": "official_account",
    "appid": "wx00000000000000d4",
    "secret": "plain-secret",
    "original_id": "gh_0000000000d4",
    "token": "plaintoken",
}
APPS = WeChatApps.model_validate({"apps": [OA, MP, SHOP, PLAIN_OA]})


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sandbox:
    """The sandbox app plus a client for it and its clock."""

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

    async def new_user(self, **body: Any) -> dict[str, Any]:
        return await self.post("/sandbox/users", body)  # type: ignore[no-any-return]

    async def token(self, app: dict[str, str] = OA) -> str:
        body = {"grant_type": "client_credential", "appid": app["appid"], "secret": app["secret"]}
        return (await self.post("/cgi-bin/stable_token", body))["access_token"]  # type: ignore[no-any-return]

    async def user_info(self, token: str, openid: str) -> dict[str, Any]:
        return await self.get("/cgi-bin/user/info", access_token=token, openid=openid, lang="zh_CN")  # type: ignore[no-any-return]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    sb = Sandbox()
    yield sb
    await sb.aclose()


@pytest.fixture
def gateway() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=GATEWAY, assert_all_called=False) as router:
        yield router


def callbacks(gateway: respx.MockRouter, app: dict[str, str], *responses: Any) -> respx.Route:
    route = gateway.post(f"/wechat/callbacks/{app['appid']}")
    if responses:
        route.side_effect = list(responses)
    else:
        route.return_value = httpx.Response(200, text="success")
    return route


def query(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}


def open_push(request: httpx.Request, app: dict[str, str] = OA) -> dict[str, Any]:
    """Check a push the way a WeChat SDK would, then return its decrypted fields."""
    q = query(request)
    check_signature(app["token"], q["signature"], q["timestamp"], q["nonce"])
    assert q["encrypt_type"] == "aes"
    crypto = WeChatCrypto(app["token"], app["encoding_aes_key"], app["appid"])
    plaintext = crypto.decrypt_message(request.content, q["msg_signature"], q["timestamp"], q["nonce"])
    fields: dict[str, Any] = xmltodict.parse(plaintext)["xml"]
    assert q["openid"] == fields["FromUserName"]
    return fields


# -- access tokens ------------------------------------------------------------------------------


async def test_stable_token_is_the_same_token_while_valid(sandbox: Sandbox) -> None:
    body = {"grant_type": "client_credential", "appid": OA["appid"], "secret": OA["secret"]}
    first = await sandbox.post("/cgi-bin/stable_token", body)
    assert first["expires_in"] == 7200
    sandbox.clock.advance(1000)
    second = await sandbox.post("/cgi-bin/stable_token", body | {"force_refresh": False})
    assert second == {"access_token": first["access_token"], "expires_in": 6200}


async def test_stable_token_renews_five_minutes_before_expiry_and_both_stay_valid(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    old = await sandbox.token()
    sandbox.clock.advance(7200 - 300)
    new = await sandbox.token()
    assert new != old
    sandbox.clock.advance(299)
    openid = user["openids"][OA["appid"]]
    assert (await sandbox.user_info(old, openid))["subscribe"] == 0
    assert (await sandbox.user_info(new, openid))["subscribe"] == 0
    sandbox.clock.advance(1)
    assert (await sandbox.user_info(old, openid))["errcode"] == 42001
    assert (await sandbox.user_info(new, openid))["subscribe"] == 0


async def test_stable_token_force_refresh_invalidates_the_old_token(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    openid = user["openids"][OA["appid"]]
    body = {"grant_type": "client_credential", "appid": OA["appid"], "secret": OA["secret"]}
    old = await sandbox.token()
    forced = (await sandbox.post("/cgi-bin/stable_token", body | {"force_refresh": True}))["access_token"]
    assert forced != old
    assert (await sandbox.user_info(old, openid))["errcode"] == 40001
    assert (await sandbox.user_info(forced, openid))["subscribe"] == 0
    # Within 30 s of the last forced refresh, force_refresh hands back the current token.
    sandbox.clock.advance(29)
    again = await sandbox.post("/cgi-bin/stable_token", body | {"force_refresh": True})
    assert again["access_token"] == forced
    sandbox.clock.advance(1)
    assert (await sandbox.post("/cgi-bin/stable_token", body | {"force_refresh": True}))["access_token"] != forced


async def test_stable_token_force_refresh_is_limited_to_20_a_day(sandbox: Sandbox) -> None:
    body = {"grant_type": "client_credential", "appid": OA["appid"], "secret": OA["secret"], "force_refresh": True}
    tokens = set()
    for _ in range(20):
        tokens.add((await sandbox.post("/cgi-bin/stable_token", body))["access_token"])
        sandbox.clock.advance(31)
    assert len(tokens) == 20
    assert (await sandbox.post("/cgi-bin/stable_token", body))["access_token"] in tokens


async def test_token_invalidates_the_previous_token_after_five_minutes(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    openid = user["openids"][OA["appid"]]
    params = {"grant_type": "client_credential", "appid": OA["appid"], "secret": OA["secret"]}
    first = await sandbox.get("/cgi-bin/token", **params)
    assert first["expires_in"] == 7200
    second = await sandbox.get("/cgi-bin/token", **params)
    assert second["access_token"] != first["access_token"]
    sandbox.clock.advance(299)
    assert (await sandbox.user_info(first["access_token"], openid))["subscribe"] == 0
    sandbox.clock.advance(1)
    assert (await sandbox.user_info(first["access_token"], openid))["errcode"] == 40001
    assert (await sandbox.user_info(second["access_token"], openid))["subscribe"] == 0


async def test_token_and_stable_token_do_not_invalidate_each_other(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    openid = user["openids"][OA["appid"]]
    stable = await sandbox.token()
    params = {"grant_type": "client_credential", "appid": OA["appid"], "secret": OA["secret"]}
    plain = (await sandbox.get("/cgi-bin/token", **params))["access_token"]
    await sandbox.get("/cgi-bin/token", **params)
    sandbox.clock.advance(600)
    assert (await sandbox.user_info(stable, openid))["subscribe"] == 0
    assert (await sandbox.user_info(plain, openid))["errcode"] == 40001
    assert await sandbox.token() == stable


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"grant_type": "client_credential", "appid": "wx00000000000000ff", "secret": "x"}, 40013),
        ({"grant_type": "client_credential", "appid": OA["appid"], "secret": "wrong"}, 40125),
        ({"appid": OA["appid"], "secret": OA["secret"]}, 40002),
    ],
)
async def test_token_endpoints_reject_bad_credentials(sandbox: Sandbox, params: dict[str, str], errcode: int) -> None:
    for answer in (
        await sandbox.get("/cgi-bin/token", **params),
        await sandbox.post("/cgi-bin/stable_token", params),
    ):
        assert answer["errcode"] == errcode
        assert "access_token" not in answer


async def test_stable_token_requires_post(sandbox: Sandbox) -> None:
    r = await sandbox.http.get(
        "/cgi-bin/stable_token",
        params={"grant_type": "client_credential", "appid": OA["appid"], "secret": OA["secret"]},
    )
    assert r.status_code == 200
    assert r.json() == {"errcode": 43002, "errmsg": "require POST method"}


async def test_token_taking_api_checks_the_access_token(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    openid = user["openids"][OA["appid"]]
    assert (await sandbox.get("/cgi-bin/user/info", openid=openid))["errcode"] == 41001
    assert (await sandbox.user_info("not-a-token", openid))["errcode"] == 40001
    token = await sandbox.token()
    sandbox.clock.advance(7200)
    assert (await sandbox.user_info(token, openid)) == {"errcode": 42001, "errmsg": "access_token expired"}


# -- user/info ----------------------------------------------------------------------------------


async def test_user_info_of_a_follower(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    callbacks(gateway, OA)
    user = await sandbox.new_user(nickname="Ann")
    await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA["appid"], "scene": "spring"})
    openid = user["openids"][OA["appid"]]
    info = await sandbox.user_info(await sandbox.token(), openid)
    assert info == {
        "subscribe": 1,
        "openid": openid,
        "language": "zh_CN",
        "subscribe_time": int(T0),
        "unionid": user["unionid"],
        "remark": "",
        "groupid": 0,
        "tagid_list": [],
        "subscribe_scene": "ADD_SCENE_QR_CODE",
        "qr_scene": 0,
        "qr_scene_str": "spring",
    }


async def test_user_info_of_a_non_follower_and_an_unknown_openid(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    token = await sandbox.token()
    openid = user["openids"][OA["appid"]]
    assert await sandbox.user_info(token, openid) == {"subscribe": 0, "openid": openid}
    assert (await sandbox.user_info(token, "o" + "x" * 27))["errcode"] == 40003
    # An openid of the same person in another app is not this account's openid.
    assert (await sandbox.user_info(token, user["openids"][MP["appid"]]))["errcode"] == 40003


async def test_user_info_of_an_unbound_follower_has_no_unionid(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    callbacks(gateway, OA)
    user = await sandbox.new_user(unionid_bound=False)
    await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA["appid"]})
    info = await sandbox.user_info(await sandbox.token(), user["openids"][OA["appid"]])
    assert info["subscribe"] == 1
    assert info["subscribe_scene"] == "ADD_SCENE_SEARCH"
    assert "unionid" not in info


async def test_user_info_is_an_official_account_api(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    mp_token = await sandbox.token(MP)
    assert (await sandbox.user_info(mp_token, user["openids"][MP["appid"]]))["errcode"] == 48001


# -- jscode2session -----------------------------------------------------------------------------


async def _code2session(sandbox: Sandbox, code: str, app: dict[str, str] = MP) -> dict[str, Any]:
    return await sandbox.get(  # type: ignore[no-any-return]
        "/sns/jscode2session",
        appid=app["appid"],
        secret=app["secret"],
        js_code=code,
        grant_type="authorization_code",
    )


async def test_login_code_is_single_use(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    code = (await sandbox.post(f"/sandbox/users/{user['user_id']}/login-code", {"appid": MP["appid"]}))["code"]
    session = await _code2session(sandbox, code)
    assert set(session) == {"openid", "session_key", "unionid"}  # no errcode on success
    assert session["openid"] == user["openids"][MP["appid"]]
    assert session["unionid"] == user["unionid"]
    assert len(session["session_key"]) == 24
    assert await _code2session(sandbox, code) == {"errcode": 40163, "errmsg": "code been used"}


async def test_unknown_and_expired_login_codes_are_invalid(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    assert (await _code2session(sandbox, "nope"))["errcode"] == 40029
    path = f"/sandbox/users/{user['user_id']}/login-code"
    code = (await sandbox.post(path, {"appid": MP["appid"]}))["code"]
    sandbox.clock.advance(300)
    assert (await _code2session(sandbox, code))["errcode"] == 40029
    fresh = (await sandbox.post(path, {"appid": MP["appid"]}))["code"]
    sandbox.clock.advance(299)
    assert "openid" in await _code2session(sandbox, fresh)


async def test_jscode2session_checks_the_app(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    code = (await sandbox.post(f"/sandbox/users/{user['user_id']}/login-code", {"appid": MP["appid"]}))["code"]
    bad = {"appid": MP["appid"], "secret": "wrong", "js_code": code, "grant_type": "authorization_code"}
    assert (await sandbox.get("/sns/jscode2session", **bad))["errcode"] == 40125
    assert (await _code2session(sandbox, code, OA))["errcode"] == 40029  # a code belongs to its app
    assert "openid" in await _code2session(sandbox, code)
    r = await sandbox.http.post(f"/sandbox/users/{user['user_id']}/login-code", json={"appid": OA["appid"]})
    assert r.status_code == 400  # wx.login exists only in mini-programs


async def test_jscode2session_of_an_unbound_user_has_no_unionid(sandbox: Sandbox) -> None:
    user = await sandbox.new_user(unionid_bound=False)
    code = (await sandbox.post(f"/sandbox/users/{user['user_id']}/login-code", {"appid": MP["appid"]}))["code"]
    assert set(await _code2session(sandbox, code)) == {"openid", "session_key"}


# -- pushes -------------------------------------------------------------------------------------


async def test_follow_with_a_scene_pushes_a_signed_encrypted_subscribe(
    sandbox: Sandbox, gateway: respx.MockRouter
) -> None:
    route = callbacks(gateway, OA)
    user = await sandbox.new_user()
    answer = await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA["appid"], "scene": 42})
    assert answer == {"status": 200, "body": "success", "attempts": 1}
    request = route.calls.last.request
    assert request.headers["content-type"] == "text/xml"
    body = xmltodict.parse(request.content)["xml"]
    assert set(body) == {"ToUserName", "Encrypt"}  # safe mode: nothing in clear but the account
    q = query(request)
    assert q["timestamp"] == str(int(T0))
    push = open_push(request)
    assert push["ToUserName"] == OA["original_id"]
    assert push["FromUserName"] == user["openids"][OA["appid"]]
    assert push["CreateTime"] == str(int(T0))
    assert push["MsgType"] == "event"
    assert push["Event"] == "subscribe"
    assert push["EventKey"] == "qrscene_42"
    assert push["Ticket"]
    # A tampered msg_signature fails the oracle, so the check above is not vacuous.
    crypto = WeChatCrypto(OA["token"], OA["encoding_aes_key"], OA["appid"])
    with pytest.raises(InvalidSignatureException):
        crypto.decrypt_message(request.content, q["signature"], q["timestamp"], q["nonce"])


async def test_follow_again_with_a_scene_pushes_scan(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, OA)
    user = await sandbox.new_user()
    path = f"/sandbox/users/{user['user_id']}/follow"
    await sandbox.post(path, {"appid": OA["appid"]})
    first = open_push(route.calls.last.request)
    assert first["Event"] == "subscribe"
    assert "EventKey" not in first
    sandbox.clock.advance(10)
    await sandbox.post(path, {"appid": OA["appid"], "scene": "store-7"})
    scan = open_push(route.calls.last.request)
    assert scan["Event"] == "SCAN"
    assert scan["EventKey"] == "store-7"
    assert scan["Ticket"]
    r = await sandbox.http.post(path, json={"appid": OA["appid"]})
    assert r.status_code == 409  # already following, nothing to push
    assert route.call_count == 2


async def test_unfollow_pushes_unsubscribe_and_ends_the_follow(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, OA)
    user = await sandbox.new_user()
    await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA["appid"]})
    answer = await sandbox.post(f"/sandbox/users/{user['user_id']}/unfollow", {"appid": OA["appid"]})
    assert answer["status"] == 200
    assert open_push(route.calls.last.request)["Event"] == "unsubscribe"
    info = await sandbox.user_info(await sandbox.token(), user["openids"][OA["appid"]])
    assert info["subscribe"] == 0
    assert (await sandbox.get(f"/sandbox/users/{user['user_id']}"))["following"] == {OA["appid"]: False}


async def test_text_message_and_menu_click(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, OA)
    user = await sandbox.new_user()
    uid = user["user_id"]
    r = await sandbox.http.post(f"/sandbox/users/{uid}/messages", json={"appid": OA["appid"], "text": "hi"})
    assert r.status_code == 409  # only followers can write to an official account
    await sandbox.post(f"/sandbox/users/{uid}/follow", {"appid": OA["appid"]})
    await sandbox.post(f"/sandbox/users/{uid}/messages", {"appid": OA["appid"], "text": "你好 <b>&"})
    text = open_push(route.calls.last.request)
    assert (text["MsgType"], text["Content"]) == ("text", "你好 <b>&")
    assert text["MsgId"].isdigit()
    assert 0 < int(text["MsgId"]) < 2**63
    await sandbox.post(f"/sandbox/users/{uid}/menu-click", {"appid": OA["appid"], "key": "MEMBER_CARD"})
    click = open_push(route.calls.last.request)
    assert (click["MsgType"], click["Event"], click["EventKey"]) == ("event", "CLICK", "MEMBER_CARD")


async def test_mini_program_json_push(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, MP)
    user = await sandbox.new_user()
    await sandbox.post(f"/sandbox/users/{user['user_id']}/messages", {"appid": MP["appid"], "text": "hello"})
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert set(body) == {"ToUserName", "Encrypt"}
    q = query(request)
    check_signature(MP["token"], q["signature"], q["timestamp"], q["nonce"])
    crypto = WeChatCrypto(MP["token"], MP["encoding_aes_key"], MP["appid"])
    push = json.loads(crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"]))
    assert push["FromUserName"] == user["openids"][MP["appid"]]
    assert push["Content"] == "hello"
    assert push["CreateTime"] == int(T0)


async def test_encrypted_reply_is_decrypted_into_body(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    reply = (
        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{gh}]]></FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[欢迎]]></Content></xml>"
    )
    crypto = WeChatCrypto(OA["token"], OA["encoding_aes_key"], OA["appid"])

    def passive_reply(request: httpx.Request) -> httpx.Response:
        push = open_push(request)
        plain = reply.format(to=push["FromUserName"], gh=push["ToUserName"])
        return httpx.Response(200, text=crypto.encrypt_message(plain, "123456", query(request)["timestamp"]))

    callbacks(gateway, OA).side_effect = passive_reply
    user = await sandbox.new_user()
    answer = await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA["appid"]})
    assert answer == {
        "status": 200,
        "body": reply.format(to=user["openids"][OA["appid"]], gh=OA["original_id"]),
        "attempts": 1,
    }


async def test_reply_with_a_bad_msg_signature_is_flagged(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    crypto = WeChatCrypto(OA["token"], OA["encoding_aes_key"], OA["appid"])
    encrypted = crypto.encrypt_message("<xml><MsgType>text</MsgType></xml>", "1", "1700000000")
    tampered = encrypted.replace("<MsgSignature><![CDATA[", "<MsgSignature><![CDATA[0")
    callbacks(gateway, OA, httpx.Response(200, text=tampered))
    user = await sandbox.new_user()
    answer = await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA["appid"]})
    assert answer["body"] == tampered
    assert "MsgSignature" in answer["reply_error"]


async def test_retry_resends_the_identical_push_after_a_timeout_or_5xx(
    sandbox: Sandbox, gateway: respx.MockRouter
) -> None:
    route = callbacks(gateway, OA, httpx.Response(503), httpx.ReadTimeout("slow"), httpx.Response(200, text="success"))
    user = await sandbox.new_user()
    answer = await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA["appid"]}, retry=1)
    assert answer == {"status": 200, "body": "success", "attempts": 3}
    sent = [call.request for call in route.calls]
    assert len(sent) == 3
    assert len({(str(r.url), r.content) for r in sent}) == 1
    log = await sandbox.get("/sandbox/pushes")
    assert log[-1]["statuses"] == [503, None, 200]


async def test_without_retry_a_failed_push_is_sent_once(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, OA, httpx.Response(503, text="busy"), httpx.Response(200, text="success"))
    user = await sandbox.new_user()
    answer = await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA["appid"]})
    assert answer == {"status": 503, "body": "busy", "attempts": 1}
    assert route.call_count == 1
    assert (await sandbox.get(f"/sandbox/users/{user['user_id']}"))["following"][OA["appid"]] is True


async def test_raw_push_in_plain_and_compat_modes(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, OA)
    payload = {"FromUserName": "oRAW", "MsgType": "event", "Event": "VIEW", "EventKey": "https://x.test"}
    plain = await sandbox.post(
        "/sandbox/push", {"appid": OA["appid"], "payload": payload, "mode": "plain", "repeat": 2}
    )
    assert plain == [{"status": 200, "body": "success", "attempts": 1}] * 2
    first, second = (call.request for call in route.calls)
    assert (str(first.url), first.content) == (str(second.url), second.content)  # a re-delivery
    q = query(first)
    assert set(q) == {"signature", "timestamp", "nonce", "openid"}
    check_signature(OA["token"], q["signature"], q["timestamp"], q["nonce"])
    fields = xmltodict.parse(first.content)["xml"]
    assert fields["ToUserName"] == OA["original_id"]
    assert fields["CreateTime"] == str(int(T0))
    assert fields["Event"] == "VIEW"

    await sandbox.post("/sandbox/push", {"appid": OA["appid"], "payload": payload, "mode": "compat"})
    compat = route.calls.last.request
    clear = xmltodict.parse(compat.content)["xml"]
    assert clear["Event"] == "VIEW"
    assert clear["Encrypt"]
    assert open_push(compat)["EventKey"] == "https://x.test"

    log = await sandbox.get("/sandbox/pushes", appid=OA["appid"])
    assert [(p["mode"], p["Event"], p["FromUserName"]) for p in log] == [
        ("plain", "VIEW", "oRAW"),
        ("plain", "VIEW", "oRAW"),
        ("compat", "VIEW", "oRAW"),
    ]


async def test_an_app_without_a_key_pushes_plaintext(sandbox: Sandbox, gateway: respx.MockRouter) -> None:
    route = callbacks(gateway, PLAIN_OA)
    user = await sandbox.new_user()
    await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": PLAIN_OA["appid"]})
    request = route.calls.last.request
    assert "encrypt_type" not in query(request)
    assert xmltodict.parse(request.content)["xml"]["Event"] == "subscribe"
    r = await sandbox.http.post(
        "/sandbox/push", json={"appid": PLAIN_OA["appid"], "payload": {"MsgType": "text"}, "mode": "safe"}
    )
    assert r.status_code == 400


# -- ids, faults, inbox -------------------------------------------------------------------------


async def test_same_seed_gives_the_same_ids() -> None:
    sandboxes = [Sandbox(seed=7), Sandbox(seed=7), Sandbox(seed=8)]
    try:
        users = [[await sb.new_user() for _ in range(3)] for sb in sandboxes]
        codes = [
            (await sb.post(f"/sandbox/users/{u[0]['user_id']}/login-code", {"appid": MP["appid"]}))["code"]
            for sb, u in zip(sandboxes, users, strict=True)
        ]
        tokens = [await sb.token() for sb in sandboxes]
    finally:
        for sb in sandboxes:
            await sb.aclose()
    assert users[0] == users[1]
    assert codes[0] == codes[1]
    assert tokens[0] == tokens[1]
    assert [u["unionid"] for u in users[0]] != [u["unionid"] for u in users[2]]
    for user in users[0]:
        ids = [user["unionid"], *user["openids"].values()]
        assert len(set(ids)) == len(ids) == 1 + len(APPS.apps)
        assert all(len(i) == 28 and i.startswith("o") for i in ids)


async def test_injected_fault_answers_the_next_call(sandbox: Sandbox) -> None:
    created = await sandbox.post("/sandbox/faults", {"path": "/cgi-bin/stable_token", "errcode": -1, "count": 1})
    assert created["count"] == 1
    body = {"grant_type": "client_credential", "appid": OA["appid"], "secret": OA["secret"]}
    assert await sandbox.post("/cgi-bin/stable_token", body) == {"errcode": -1, "errmsg": "system error"}
    assert "access_token" in await sandbox.post("/cgi-bin/stable_token", body)
    assert await sandbox.get("/sandbox/faults") == []


async def test_inbox_starts_empty_and_lists_deliveries(sandbox: Sandbox) -> None:
    user = await sandbox.new_user()
    assert await sandbox.get(f"/sandbox/users/{user['user_id']}/inbox") == []
    state = sandbox.app.state.sandbox
    state.deliver(state.user(user["user_id"]), {"appid": OA["appid"], "kind": "template", "template_id": "T1"})
    inbox = await sandbox.get(f"/sandbox/users/{user['user_id']}/inbox")
    assert inbox == [{"seq": 1, "delivered_at": int(T0), "appid": OA["appid"], "kind": "template", "template_id": "T1"}]
    assert (await sandbox.http.get("/sandbox/users/u9999/inbox")).status_code == 404
