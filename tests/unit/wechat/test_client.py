from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from shared.errors import ConfigurationError, ServiceUnavailable, UpstreamError
from shared.http import create_client
from shared.wechat import errors as E
from shared.wechat.apps import AppKind, WeChatApp, WeChatApps
from shared.wechat.client import WeChatClient
from shared.wechat.token import STABLE_TOKEN_PATH

BASE = "https://api.weixin.test"
SECRET = "app-secret-0123456789abcdef"
OA = WeChatApp(name="oa", kind=AppKind.OFFICIAL_ACCOUNT, appid="wx0123456789abcdef", secret=SECRET, token="tok123")
MP = WeChatApp(name="mp", kind=AppKind.MINI_PROGRAM, appid="wxfedcba9876543210", secret="mp-secret-xyz", token="tok456")
APPS = WeChatApps(apps=[OA, MP])

SEND = "/cgi-bin/message/custom/send"
USER_INFO = "/cgi-bin/user/info"
PHONE = "/wxa/business/getuserphonenumber"
CODE2SESSION = "/sns/jscode2session"


def token(value: str) -> httpx.Response:
    return httpx.Response(200, json={"access_token": value, "expires_in": 7200})


def err(code: int, msg: str = "x") -> httpx.Response:
    return httpx.Response(200, json={"errcode": code, "errmsg": msg})


OK = httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as r:
        yield r


@pytest.fixture
def token_route(router: respx.MockRouter) -> respx.Route:
    return router.post(STABLE_TOKEN_PATH).mock(side_effect=[token("T1"), token("T2"), token("T3")])


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # One for the module: building a client loads the CA bundle (~0.1 s); respx patches below it.
    client = create_client(BASE, retries=0)
    yield client
    await client.aclose()


@pytest.fixture
def client(http: httpx.AsyncClient, sleeps: Sleeps) -> WeChatClient:
    return WeChatClient(http, APPS, max_attempts=3, backoff=0.2, sleep=sleeps)


# --- the basic call -------------------------------------------------------------------------------


async def test_call_adds_the_access_token_and_returns_the_answer(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    route = router.get("/cgi-bin/menu/get").mock(return_value=httpx.Response(200, json={"menu": {"button": []}}))
    assert await client.call(OA.appid, "GET", "/cgi-bin/menu/get", params={"x": "1"}) == {"menu": {"button": []}}
    assert route.calls[0].request.url.params["access_token"] == "T1"
    assert route.calls[0].request.url.params["x"] == "1"
    await client.call(OA.appid, "GET", "/cgi-bin/menu/get")
    assert token_route.call_count == 1


async def test_one_token_provider_per_appid(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    route = router.post(SEND).mock(return_value=OK)
    await client.call(OA.appid, "POST", SEND, json={})
    await client.call(MP.appid, "POST", SEND, json={})
    await client.call(OA.appid, "POST", SEND, json={})
    assert [json.loads(c.request.content)["appid"] for c in token_route.calls] == [OA.appid, MP.appid]
    assert [c.request.url.params["access_token"] for c in route.calls] == ["T1", "T2", "T1"]
    assert client.token_provider(OA.appid) is client.token_provider(OA.appid)


async def test_unknown_appid_is_a_configuration_error(client: WeChatClient) -> None:
    with pytest.raises(ConfigurationError):
        await client.call("wxnotconfigured0000", "GET", USER_INFO)


async def test_nineteen_digit_integers_survive_exactly(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    raw = b'{"errcode":0,"order_id":3704123456789012345,"ids":[9223372036854775807],"price":12.34567890123456789}'
    router.get("/channels/ec/order/get").mock(return_value=httpx.Response(200, content=raw))
    body = await client.call(OA.appid, "GET", "/channels/ec/order/get")
    assert body["order_id"] == 3704123456789012345
    assert type(body["order_id"]) is int
    assert body["ids"] == [9223372036854775807]
    assert body["price"] == Decimal("12.34567890123456789")


async def test_json_body_is_sent_as_utf8_not_escaped(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    route = router.post(SEND).mock(return_value=OK)
    payload = {"touser": "o1", "msgtype": "text", "text": {"content": "你好"}}
    await client.send_custom_message(OA.appid, payload)
    request = route.calls[0].request
    assert "你好".encode() in request.content
    assert request.headers["content-type"].startswith("application/json")
    assert json.loads(request.content) == payload


# --- the token-rejected path ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [40001, 40014, 42001])
async def test_rejected_token_is_invalidated_refetched_and_the_call_retried_once(
    router: respx.MockRouter,
    token_route: respx.Route,
    client: WeChatClient,
    sleeps: Sleeps,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    provider = client.token_provider(OA.appid)
    invalidated: list[str] = []
    real_invalidate = provider.invalidate

    async def spy(tok: str) -> None:
        invalidated.append(tok)
        await real_invalidate(tok)

    monkeypatch.setattr(provider, "invalidate", spy)
    route = router.post(SEND).mock(side_effect=[err(code, "access_token is invalid or not latest"), OK])

    await client.send_custom_message(OA.appid, {"touser": "o1"})

    assert invalidated == ["T1"]
    assert token_route.call_count == 2
    assert route.call_count == 2
    assert [c.request.url.params["access_token"] for c in route.calls] == ["T1", "T2"]
    assert sleeps.delays == []


@pytest.mark.parametrize("second", [40001, 42001])
async def test_a_second_token_rejection_is_raised_not_looped(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, second: int
) -> None:
    route = router.post(SEND).mock(side_effect=[err(40001), err(second), OK])
    with pytest.raises(E.InvalidAccessToken) as caught:
        await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert caught.value.errcode == second
    assert caught.value.path == SEND
    assert route.call_count == 2
    assert token_route.call_count == 2


async def test_token_rejection_then_busy_is_still_bounded(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, sleeps: Sleeps
) -> None:
    route = router.post(SEND).mock(side_effect=[err(40001), err(-1), err(40001), OK])
    with pytest.raises(E.InvalidAccessToken):
        await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert route.call_count == 3
    assert token_route.call_count == 2
    assert len(sleeps.delays) == 1


async def test_a_stale_rejection_does_not_evict_a_fresh_token(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    provider = client.token_provider(OA.appid)
    assert await provider.get() == "T1"
    await provider.invalidate("T1")
    assert await provider.get() == "T2"
    # A call that went out with T1 reports its failure late.
    await provider.invalidate("T1")
    route = router.get(USER_INFO).mock(return_value=httpx.Response(200, json={"subscribe": 0, "openid": "o"}))
    await client.user_info(OA.appid, "o")
    assert route.calls[0].request.url.params["access_token"] == "T2"
    assert token_route.call_count == 2


# --- -1, network errors, 5xx ----------------------------------------------------------------------


async def test_busy_then_success_is_retried_with_backoff(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, sleeps: Sleeps
) -> None:
    # -1 means WeChat did nothing, so even a message send is repeated.
    route = router.post(SEND).mock(side_effect=[err(-1, "system error"), OK])
    await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert route.call_count == 2
    assert len(sleeps.delays) == 1
    assert 0.1 <= sleeps.delays[0] <= 0.3


async def test_busy_forever_raises_system_busy_after_max_attempts(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, sleeps: Sleeps
) -> None:
    route = router.post(SEND).mock(return_value=err(-1, "system error"))
    with pytest.raises(E.SystemBusy) as caught:
        await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert caught.value.retryable is True
    assert route.call_count == 3
    assert len(sleeps.delays) == 2
    assert 0.1 <= sleeps.delays[0] <= 0.3
    assert 0.2 <= sleeps.delays[1] <= 0.6  # exponential, with jitter
    assert token_route.call_count == 1


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.ReadError("reset"), httpx.RemoteProtocolError("eof")],
    ids=["read-timeout", "read-error", "protocol"],
)
async def test_network_error_on_a_message_send_is_not_retried(
    router: respx.MockRouter,
    token_route: respx.Route,
    client: WeChatClient,
    sleeps: Sleeps,
    failure: Exception,
) -> None:
    route = router.post(SEND).mock(side_effect=failure)
    with pytest.raises(E.WeChatUnavailable):
        await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert route.call_count == 1
    assert sleeps.delays == []


async def test_http_5xx_on_a_message_send_is_not_retried(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, sleeps: Sleeps
) -> None:
    route = router.post(SEND).mock(return_value=httpx.Response(502, text="bad gateway"))
    with pytest.raises(E.WeChatUnavailable):
        await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert route.call_count == 1
    assert sleeps.delays == []


async def test_connect_error_proves_nothing_was_sent_so_a_send_is_retried(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, sleeps: Sleeps
) -> None:
    route = router.post(SEND).mock(side_effect=[httpx.ConnectError("refused"), OK])
    await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert route.call_count == 2
    assert len(sleeps.delays) == 1


async def test_token_fetch_failure_is_retried_even_for_a_send(
    router: respx.MockRouter, client: WeChatClient, sleeps: Sleeps
) -> None:
    tokens = router.post(STABLE_TOKEN_PATH).mock(side_effect=[err(-1), httpx.ReadTimeout("slow"), token("T1")])
    route = router.post(SEND).mock(return_value=OK)
    await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert tokens.call_count == 3
    assert route.call_count == 1
    assert len(sleeps.delays) == 2


async def test_token_credential_error_is_not_retried(
    router: respx.MockRouter, client: WeChatClient, sleeps: Sleeps
) -> None:
    tokens = router.post(STABLE_TOKEN_PATH).mock(return_value=err(40125, "invalid appsecret"))
    route = router.post(SEND).mock(return_value=OK)
    with pytest.raises(E.InvalidAppSecret):
        await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert tokens.call_count == 1
    assert route.call_count == 0
    assert sleeps.delays == []


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("slow"),
        httpx.Response(503, text="busy"),
        httpx.Response(200, text="<html>captive</html>"),
    ],
    ids=["read-timeout", "http-503", "not-json"],
)
async def test_get_is_retried_after_ambiguous_failures(
    router: respx.MockRouter,
    token_route: respx.Route,
    client: WeChatClient,
    sleeps: Sleeps,
    failure: Exception | httpx.Response,
) -> None:
    good = httpx.Response(200, json={"subscribe": 1, "openid": "o1"})
    route = router.get(USER_INFO).mock(side_effect=[failure, good])
    info = await client.user_info(OA.appid, "o1")
    assert info.openid == "o1"
    assert route.call_count == 2
    assert len(sleeps.delays) == 1


async def test_get_gives_up_after_max_attempts(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, sleeps: Sleeps
) -> None:
    route = router.get(USER_INFO).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(E.WeChatUnavailable) as caught:
        await client.user_info(OA.appid, "o1")
    assert isinstance(caught.value, ServiceUnavailable)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert route.call_count == 3
    assert len(sleeps.delays) == 2


async def test_idempotent_post_opts_in_to_network_retries(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, sleeps: Sleeps
) -> None:
    path = "/cgi-bin/user/info/batchget"
    route = router.post(path).mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json={})])
    await client.call(OA.appid, "POST", path, json={"user_list": []}, idempotent=True)
    assert route.call_count == 2


@pytest.mark.parametrize("code", [45011, 45009, 43101, 47003])
async def test_other_errcodes_are_raised_at_once(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, sleeps: Sleeps, code: int
) -> None:
    route = router.get(USER_INFO).mock(return_value=err(code))
    with pytest.raises(E.WeChatAPIError) as caught:
        await client.user_info(OA.appid, "o1")
    assert caught.value.errcode == code
    assert route.call_count == 1
    assert sleeps.delays == []


# --- typed calls ----------------------------------------------------------------------------------


async def test_user_info(router: respx.MockRouter, token_route: respx.Route, client: WeChatClient) -> None:
    answer = {
        "subscribe": 1,
        "openid": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
        "language": "zh_CN",
        "subscribe_time": 1382694957,
        "remark": "",
        "groupid": 0,
        "tagid_list": [128, 2],
        "subscribe_scene": "ADD_SCENE_QR_CODE",
        "qr_scene": 98765,
        "qr_scene_str": "",
        "something_new": True,
    }
    route = router.get(USER_INFO).mock(return_value=httpx.Response(200, json=answer))
    info = await client.user_info(OA.appid, answer["openid"])  # type: ignore[arg-type]
    params = route.calls[0].request.url.params
    assert params["openid"] == answer["openid"]
    assert params["lang"] == "zh_CN"
    assert info.subscribed
    assert info.unionid is None
    assert info.tagid_list == [128, 2]
    assert info.qr_scene == 98765
    assert info.model_extra == {"something_new": True}


async def test_user_info_of_a_non_follower(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    router.get(USER_INFO).mock(return_value=httpx.Response(200, json={"subscribe": 0, "openid": "o1", "unionid": "u1"}))
    info = await client.user_info(OA.appid, "o1")
    assert not info.subscribed
    assert info.unionid == "u1"
    assert info.subscribe_time is None


async def test_jscode2session_success_without_errcode(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    answer = {"openid": "oMP1", "session_key": "tiihtNczf5v6AKRyjwEUhQ==", "unionid": "uX"}
    route = router.get(CODE2SESSION).mock(return_value=httpx.Response(200, json=answer))
    session = await client.jscode2session(MP.appid, "code-123")
    params = dict(route.calls[0].request.url.params)
    assert params == {
        "appid": MP.appid,
        "secret": MP.secret,
        "js_code": "code-123",
        "grant_type": "authorization_code",
    }
    assert token_route.call_count == 0
    assert (session.openid, session.unionid) == ("oMP1", "uX")
    assert "tiihtNczf5v6AKRyjwEUhQ" not in repr(session)


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [(40029, E.InvalidCode, 400), (40163, E.CodeUsed, 400), (40226, E.CodeBlocked, 403)],
)
async def test_jscode2session_errors(
    router: respx.MockRouter, client: WeChatClient, code: int, cls: type[E.WeChatAPIError], status: int
) -> None:
    route = router.get(CODE2SESSION).mock(return_value=err(code, "invalid code, rid: 6123"))
    with pytest.raises(cls) as caught:
        await client.jscode2session(MP.appid, "bad")
    assert caught.value.status == status
    assert caught.value.path == CODE2SESSION
    assert route.call_count == 1


async def test_get_phone_number(router: respx.MockRouter, token_route: respx.Route, client: WeChatClient) -> None:
    answer = {
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": "13800138000",
            "purePhoneNumber": "13800138000",
            "countryCode": 86,
            "watermark": {"timestamp": 1637744274, "appid": MP.appid},
        },
    }
    route = router.post(PHONE).mock(return_value=httpx.Response(200, json=answer))
    phone = await client.get_phone_number(MP.appid, "pcode")
    assert json.loads(route.calls[0].request.content) == {"code": "pcode"}
    assert route.calls[0].request.url.params["access_token"] == "T1"
    assert phone.pure_phone_number == "13800138000"
    assert phone.country_code == "86"
    assert phone.watermark is not None and phone.watermark.appid == MP.appid


async def test_get_phone_number_network_error_is_not_retried(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    # The code is single-use: WeChat may have consumed it.
    route = router.post(PHONE).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(E.WeChatUnavailable):
        await client.get_phone_number(MP.appid, "pcode")
    assert route.call_count == 1


async def test_malformed_success_answer_is_unavailable(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient
) -> None:
    router.post(PHONE).mock(return_value=OK)
    with pytest.raises(E.WeChatUnavailable, match="unexpected answer"):
        await client.get_phone_number(MP.appid, "pcode")


# --- errcode mapping ------------------------------------------------------------------------------

MAPPED: list[tuple[int, type[E.WeChatAPIError], bool, int]] = [
    (-1, E.SystemBusy, True, 503),
    (40001, E.InvalidAccessToken, True, 502),
    (40014, E.InvalidAccessToken, True, 502),
    (42001, E.InvalidAccessToken, True, 502),
    (40002, E.InvalidGrantType, False, 502),
    (40013, E.InvalidAppId, False, 502),
    (40125, E.InvalidAppSecret, False, 502),
    (40164, E.IpNotWhitelisted, False, 502),
    (89503, E.IpNeedsConfirmation, False, 502),
    (40003, E.InvalidOpenid, False, 502),
    (40029, E.InvalidCode, False, 400),
    (40163, E.CodeUsed, False, 400),
    (40226, E.CodeBlocked, False, 403),
    (40037, E.InvalidTemplateId, False, 502),
    (41030, E.InvalidPage, False, 502),
    (43002, E.RequirePost, False, 502),
    (43004, E.RequireSubscribe, False, 502),
    (43101, E.UserRefusedMessage, False, 502),
    (45009, E.DailyQuotaExceeded, False, 502),
    (45011, E.MinuteQuotaExceeded, True, 503),
    (45015, E.ReplyTimeLimit, False, 502),
    (45047, E.CustomerServiceLimit, False, 502),
    (47001, E.DataFormatError, False, 502),
    (47003, E.ArgumentInvalid, False, 502),
    (48001, E.ApiUnauthorized, False, 502),
    (10100001, E.ShopSystemError, True, 502),
    (10100002, E.ShopInvalidArgument, False, 502),
    (10100003, E.ShopNotFound, False, 502),
]


def test_the_table_covers_the_whole_registry() -> None:
    assert {code: cls for code, cls, _, _ in MAPPED} == E.mapped_errcodes()


@pytest.mark.parametrize(("code", "cls", "retryable", "status"), MAPPED, ids=[str(m[0]) for m in MAPPED])
def test_error_for_maps_every_errcode(code: int, cls: type[E.WeChatAPIError], retryable: bool, status: int) -> None:
    error = E.error_for(code, "some message", "/some/path")
    assert type(error) is cls
    assert isinstance(error, UpstreamError)
    assert (error.errcode, error.errmsg, error.path) == (code, "some message", "/some/path")
    assert error.retryable is retryable
    assert error.status == status
    assert error.problem()["errcode"] == code
    assert error.problem()["type"].endswith(cls.type_slug)


@pytest.mark.parametrize(
    ("code", "cls", "retryable", "status"),
    [m for m in MAPPED if m[0] not in (-1, 40001, 40014, 42001)],
    ids=[str(m[0]) for m in MAPPED if m[0] not in (-1, 40001, 40014, 42001)],
)
async def test_client_raises_the_mapped_class(
    router: respx.MockRouter,
    token_route: respx.Route,
    client: WeChatClient,
    code: int,
    cls: type[E.WeChatAPIError],
    retryable: bool,
    status: int,
) -> None:
    route = router.post(SEND).mock(return_value=err(code, "nope"))
    with pytest.raises(cls) as caught:
        await client.send_custom_message(OA.appid, {"touser": "o1"})
    assert type(caught.value) is cls
    assert caught.value.retryable is retryable
    assert route.call_count == 1


def test_unknown_errcode_gets_the_base_class() -> None:
    error = E.error_for(61451, "invalid parameter", "/x")
    assert type(error) is E.WeChatAPIError
    assert error.retryable is False
    assert error.status == 502


def test_token_errcodes_from_the_token_endpoint_mean_bad_credentials() -> None:
    error = E.error_for(40001, "invalid credential", STABLE_TOKEN_PATH)
    assert type(error) is E.WeChatCredentialError
    assert error.retryable is False


def test_minute_quota_says_when_to_come_back() -> None:
    error = E.error_for(45011, "api minute-quota reach limit", "/x")
    assert error.headers["Retry-After"] == "60"


def test_unavailable_is_a_service_unavailable() -> None:
    assert E.WeChatUnavailable.status == 503
    assert E.WeChatUnavailable.retryable is True


# --- secrets --------------------------------------------------------------------------------------


async def test_secret_and_token_never_appear_in_errors_or_logs(
    router: respx.MockRouter, token_route: respx.Route, client: WeChatClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    # A hostile or buggy errmsg that echoes what we sent.
    router.get(CODE2SESSION).mock(return_value=err(40029, f"invalid code secret={MP.secret} {MP.secret}"))
    router.get(USER_INFO).mock(return_value=err(40003, "invalid openid access_token=T1 T1"))
    raised: list[E.WeChatAPIError] = []
    with capture_logs() as logs:
        for call in (client.jscode2session(MP.appid, "c"), client.user_info(OA.appid, "o")):
            with pytest.raises(E.WeChatAPIError) as caught:
                await call
            raised.append(caught.value)
    for error in raised:
        text = " ".join([str(error), repr(error), error.detail, error.errmsg, json.dumps(error.problem())])
        assert MP.secret not in text
        assert "T1" not in text
    logged = " ".join(r.getMessage() for r in caplog.records) + json.dumps(logs, default=str)
    assert "HTTP Request" in logged  # httpx did log the requests…
    assert MP.secret not in logged  # …without the secret
    assert SECRET not in logged
    assert "access_token=T1" not in logged


# --- lifecycle ------------------------------------------------------------------------------------


async def test_create_builds_its_own_http_client_and_closes_it(
    router: respx.MockRouter, token_route: respx.Route, sleeps: Sleeps
) -> None:
    client = WeChatClient.create(BASE, APPS, max_attempts=2, sleep=sleeps)
    route = router.post(SEND).mock(return_value=httpx.Response(502, text="bad gateway"))
    async with client:
        with pytest.raises(E.WeChatUnavailable):
            await client.send_custom_message(OA.appid, {"touser": "o1"})
    # The client's own rule applies (a POST is not replayed after a 502) and the transport adds none.
    assert route.call_count == 1
    assert client._http.is_closed
