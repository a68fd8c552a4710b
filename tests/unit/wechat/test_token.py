from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from shared.http import create_client
from shared.wechat.apps import AppKind, WeChatApp
from shared.wechat.errors import (
    InvalidAppSecret,
    IpNotWhitelisted,
    SystemBusy,
    WeChatCredentialError,
    WeChatUnavailable,
)
from shared.wechat.token import STABLE_TOKEN_PATH, StableTokenProvider

BASE = "https://api.weixin.test"
SECRET = "app-secret-0123456789abcdef"
APP = WeChatApp(name="oa", kind=AppKind.OFFICIAL_ACCOUNT, appid="wx0123456789abcdef", secret=SECRET, token="tok123")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ok(token: str, expires_in: int = 7200) -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "expires_in": expires_in})


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as r:
        yield r


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = create_client(BASE, retries=0)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(http: httpx.AsyncClient, clock: FakeClock) -> StableTokenProvider:
    return StableTokenProvider(http, APP, clock=clock)


async def test_fetches_stable_token_in_normal_mode_and_caches(
    router: respx.MockRouter, provider: StableTokenProvider
) -> None:
    route = router.post(STABLE_TOKEN_PATH).mock(return_value=ok("T1"))
    assert await provider.get() == "T1"
    assert await provider.get() == "T1"
    assert route.call_count == 1
    sent = json.loads(route.calls[0].request.content)
    assert sent == {
        "grant_type": "client_credential",
        "appid": APP.appid,
        "secret": SECRET,
        "force_refresh": False,
    }
    # The secret goes in the body, never in the URL (which ends up in access logs).
    assert SECRET not in str(route.calls[0].request.url)


async def test_refreshes_refresh_margin_before_expiry(
    router: respx.MockRouter, provider: StableTokenProvider, clock: FakeClock
) -> None:
    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=[ok("T1", 7200), ok("T2", 7200)])
    assert await provider.get() == "T1"
    clock.now += 7200 - 300 - 1
    assert await provider.get() == "T1"
    assert route.call_count == 1
    clock.now += 1
    assert await provider.get() == "T2"
    assert route.call_count == 2


async def test_short_expires_in_is_still_cached_briefly(
    router: respx.MockRouter, provider: StableTokenProvider, clock: FakeClock
) -> None:
    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=[ok("T1", 100), ok("T2", 100)])
    assert await provider.get() == "T1"
    clock.now += 49
    assert await provider.get() == "T1"
    assert route.call_count == 1
    clock.now += 1
    assert await provider.get() == "T2"
    assert route.call_count == 2


async def test_custom_refresh_margin(router: respx.MockRouter, http: httpx.AsyncClient, clock: FakeClock) -> None:
    provider = StableTokenProvider(http, APP, refresh_margin=600, clock=clock)
    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=[ok("T1", 7200), ok("T2", 7200)])
    await provider.get()
    clock.now += 6599
    assert await provider.get() == "T1"
    clock.now += 1
    assert await provider.get() == "T2"
    assert route.call_count == 2


async def test_fifty_concurrent_callers_share_one_request(
    router: respx.MockRouter, provider: StableTokenProvider
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return ok("T1")

    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=slow)
    tokens = await asyncio.gather(*(provider.get() for _ in range(50)))
    assert tokens == ["T1"] * 50
    assert route.call_count == 1


async def test_error_reaches_every_waiter_and_is_not_cached(
    router: respx.MockRouter, provider: StableTokenProvider
) -> None:
    async def refused(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return httpx.Response(200, json={"errcode": 40164, "errmsg": "invalid ip 1.2.3.4, not in whitelist"})

    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=refused)
    results = await asyncio.gather(*(provider.get() for _ in range(10)), return_exceptions=True)
    assert route.call_count == 1
    assert all(isinstance(r, IpNotWhitelisted) for r in results)
    assert {r.errcode for r in results if isinstance(r, IpNotWhitelisted)} == {40164}

    route.mock(side_effect=None, return_value=ok("T1"))
    assert await provider.get() == "T1"
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("errcode", "cls"),
    [(40125, InvalidAppSecret), (40001, WeChatCredentialError), (-1, SystemBusy)],
)
async def test_token_endpoint_errors_are_typed(
    router: respx.MockRouter, provider: StableTokenProvider, errcode: int, cls: type[Exception]
) -> None:
    # 40001 from the token endpoint means a bad secret, not a stale token.
    router.post(STABLE_TOKEN_PATH).mock(
        return_value=httpx.Response(200, json={"errcode": errcode, "errmsg": f"bad secret {SECRET}"})
    )
    with pytest.raises(cls) as caught:
        await provider.get()
    assert type(caught.value) is cls
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert SECRET not in json.dumps(caught.value.problem())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.ConnectError("boom"),
        httpx.ReadTimeout("slow"),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(200, text="<html>captive portal</html>"),
        httpx.Response(200, json={"errcode": 0, "errmsg": "ok"}),
    ],
    ids=["connect", "read-timeout", "http-502", "not-json", "no-token"],
)
async def test_transport_and_garbage_answers_are_unavailable(
    router: respx.MockRouter, provider: StableTokenProvider, answer: Exception | httpx.Response
) -> None:
    route = router.post(STABLE_TOKEN_PATH)
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    with pytest.raises(WeChatUnavailable) as caught:
        await provider.get()
    assert SECRET not in str(caught.value)
    assert route.call_count == 1  # the provider itself does not retry; WeChatClient does


async def test_invalidate_is_compare_and_delete(router: respx.MockRouter, provider: StableTokenProvider) -> None:
    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=[ok("T1"), ok("T2")])
    assert await provider.get() == "T1"

    await provider.invalidate("T0")  # a failure reported for some older token
    assert await provider.get() == "T1"
    assert route.call_count == 1

    await provider.invalidate("T1")
    assert await provider.get() == "T2"
    assert route.call_count == 2

    # A slow call that used T1 fails only now: T2 must survive.
    await provider.invalidate("T1")
    assert await provider.get() == "T2"
    assert route.call_count == 2


async def test_force_refresh_is_explicit_and_replaces_the_cache(
    router: respx.MockRouter, provider: StableTokenProvider
) -> None:
    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=[ok("T1"), ok("T2")])
    assert await provider.get() == "T1"
    assert await provider.force_refresh() == "T2"
    assert json.loads(route.calls[1].request.content)["force_refresh"] is True
    assert await provider.get() == "T2"
    assert route.call_count == 2


async def test_force_refresh_waits_for_a_normal_fetch_in_flight(
    router: respx.MockRouter, provider: StableTokenProvider
) -> None:
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        forced = json.loads(request.content)["force_refresh"]
        if not forced:  # the normal fetch is held in flight until the forced call has started
            in_flight.set()
            await release.wait()
        return ok("NEW" if forced else "OLD")

    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=answer)
    normal = asyncio.create_task(provider.get())
    await asyncio.wait_for(in_flight.wait(), 5)
    forced = asyncio.create_task(provider.force_refresh())
    await asyncio.sleep(0)  # one loop turn: the forced call starts while the normal one is held
    release.set()
    assert await forced == "NEW"
    assert await normal == "OLD"
    # The normal fetch landed first, so it cannot overwrite the forced token.
    assert await provider.get() == "NEW"
    assert route.call_count == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(
    router: respx.MockRouter, provider: StableTokenProvider
) -> None:
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        in_flight.set()
        await release.wait()
        return ok("T1")

    route = router.post(STABLE_TOKEN_PATH).mock(side_effect=held)
    first = asyncio.create_task(provider.get())
    second = asyncio.create_task(provider.get())
    await asyncio.wait_for(in_flight.wait(), 5)  # both callers have started: the fetch is in flight
    first.cancel()
    release.set()
    assert await second == "T1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert route.call_count == 1
