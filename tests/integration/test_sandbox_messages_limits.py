"""WeChat's API limits in the sandbox: 45011 over a per-second rate, 45009 over a daily quota that
resets at Beijing midnight, counted per app, and never exceeded by concurrent callers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import respx

from tests.integration.test_sandbox import GATEWAY, MP, OA, T0, FakeClock
from tests.integration.test_sandbox_identity import APPS, Harness, gateway, oid, sb
from tests.integration.test_sandbox_messages import TEMPLATE_SEND, data, template
from tools.wechat_sandbox import create_app

__all__ = ["gateway", "sb"]  # fixtures shared with test_sandbox_identity

TOO_FAST = {"errcode": 45011, "errmsg": "api minute-quota reach limit  mustslower  retry next minute"}
DAY_USED = {"errcode": 45009, "errmsg": "reach max api daily quota limit"}


async def limit(sb: Harness, path: str = TEMPLATE_SEND, **body: Any) -> dict[str, Any]:
    return await sb.post("/sandbox/limits", {"path": path, **body})  # type: ignore[no-any-return]


async def sender(sb: Harness) -> tuple[str, dict[str, Any]]:
    """A valid template-message call: (token, body)."""
    user = await sb.follower()
    paid = await template(sb, OA, "order_paid")
    return await sb.token(), {"touser": oid(user), "template_id": paid["template_id"], "data": data("order_paid")}


async def call(sb: Harness, token: str, body: dict[str, Any], path: str = TEMPLATE_SEND) -> dict[str, Any]:
    return await sb.post(path, body, access_token=token)  # type: ignore[no-any-return]


async def test_over_the_rate_within_one_second_is_45011(sb: Harness, gateway: respx.MockRouter) -> None:
    token, body = await sender(sb)
    created = await limit(sb, per_second=3)
    assert created[TEMPLATE_SEND] | {"apps": {}} == {
        "calls": 0,
        "rejected": 0,
        "peak_per_second": 0,
        "per_second": 3,
        "per_day": None,
        "apps": {},
    }
    assert [(await call(sb, token, body))["errcode"] for _ in range(3)] == [0, 0, 0]
    assert await call(sb, token, body) == TOO_FAST
    sb.clock.advance(0.999)
    assert await call(sb, token, body) == TOO_FAST
    sb.clock.advance(0.001)  # a second after the first three
    assert [(await call(sb, token, body))["errcode"] for _ in range(4)] == [0, 0, 0, 45011]
    stats = (await sb.get("/sandbox/limits"))[TEMPLATE_SEND]
    assert (stats["calls"], stats["rejected"], stats["peak_per_second"]) == (9, 3, 3)
    assert stats["apps"] == {OA["appid"]: {"calls": 9, "rejected": 3, "peak_per_second": 3, "used_today": 6}}
    # A refused call delivered nothing.
    assert len(await sb.get(f"/sandbox/users/{body_user(sb, body)}/inbox")) == 6


def body_user(sb: Harness, body: dict[str, Any]) -> str:
    user = sb.app.state.sandbox.user_by_openid(OA["appid"], body["touser"])
    return user.user_id  # type: ignore[no-any-return]


async def test_the_window_rolls_and_the_peak_is_per_clock_second(sb: Harness, gateway: respx.MockRouter) -> None:
    sb.clock.now = 2_000_000_000.0  # a whole second
    token, body = await sender(sb)
    await limit(sb, per_second=3)
    assert [(await call(sb, token, body))["errcode"] for _ in range(2)] == [0, 0]
    sb.clock.advance(0.9)
    assert (await call(sb, token, body))["errcode"] == 0
    sb.clock.advance(0.1)  # the next clock second; the call at .9 is still within the last second
    assert [(await call(sb, token, body))["errcode"] for _ in range(3)] == [0, 0, 45011]
    stats = (await sb.get("/sandbox/limits"))[TEMPLATE_SEND]
    assert (stats["calls"], stats["rejected"], stats["peak_per_second"]) == (6, 1, 3)


async def test_the_daily_quota_resets_at_beijing_midnight(sb: Harness, gateway: respx.MockRouter) -> None:
    beijing_midnight = ((int(T0) + 8 * 3600) // 86400 + 1) * 86400 - 8 * 3600
    sb.clock.now = beijing_midnight - 10.0  # 23:59:50 in Beijing, 15:59:50 UTC
    token, body = await sender(sb)
    await limit(sb, per_day=2, per_second=100)
    assert [(await call(sb, token, body))["errcode"] for _ in range(2)] == [0, 0]
    assert await call(sb, token, body) == DAY_USED
    sb.clock.advance(9.5)
    assert await call(sb, token, body) == DAY_USED
    sb.clock.advance(0.5)  # 00:00:00 in Beijing
    assert [(await call(sb, token, body))["errcode"] for _ in range(3)] == [0, 0, 45009]
    stats = (await sb.get("/sandbox/limits"))[TEMPLATE_SEND]
    assert (stats["calls"], stats["rejected"], stats["apps"][OA["appid"]]["used_today"]) == (7, 3, 2)


async def test_limits_are_each_apps_own(sb: Harness, gateway: respx.MockRouter) -> None:
    send = "/cgi-bin/message/custom/send"
    user = await sb.user()
    await sb.control(user, "follow", {"appid": OA["appid"]})
    await sb.control(user, "messages", {"appid": OA["appid"], "text": "hi"})
    await sb.control(user, "messages", {"appid": MP["appid"], "text": "hi"})
    await limit(sb, send, per_second=1)

    def text(app: dict[str, str]) -> dict[str, Any]:
        return {"touser": oid(user, app), "msgtype": "text", "text": {"content": "hello"}}

    assert (await sb.wx(send, text(OA), OA))["errcode"] == 0
    assert (await sb.wx(send, text(MP), MP))["errcode"] == 0  # the mini-program has its own second
    assert await sb.wx(send, text(OA), OA) == TOO_FAST
    assert (await sb.get("/sandbox/limits"))[send]["apps"] == {
        OA["appid"]: {"calls": 2, "rejected": 1, "peak_per_second": 1, "used_today": 1},
        MP["appid"]: {"calls": 1, "rejected": 0, "peak_per_second": 1, "used_today": 1},
    }
    # Other paths are not limited; a call with a bad token is answered by the API and not counted.
    assert (await sb.wx("/cgi-bin/tags/get", None, OA)).get("errcode") != 45011
    assert (await sb.post(send, text(OA), access_token="forged"))["errcode"] == 40001
    assert (await sb.get("/sandbox/limits"))[send]["calls"] == 3


async def test_concurrent_sends_never_exceed_the_rate(sb: Harness, gateway: respx.MockRouter) -> None:
    token, body = await sender(sb)
    await limit(sb, per_second=5)
    answers = await asyncio.gather(*(call(sb, token, body) for _ in range(40)))
    assert sorted(a["errcode"] for a in answers) == [0] * 5 + [45011] * 35
    assert len(await sb.get(f"/sandbox/users/{body_user(sb, body)}/inbox")) == 5
    assert (await sb.get("/sandbox/limits"))[TEMPLATE_SEND]["peak_per_second"] == 5


class TickingClock(FakeClock):
    """Time moves on by ``step`` every time anyone reads it, like a busy real clock."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def test_concurrent_sends_over_several_seconds_stay_under_the_rate(gateway: respx.MockRouter) -> None:
    harness = Harness()
    await harness.aclose()
    harness.clock = TickingClock(0.02)
    harness.app = create_app(APPS, GATEWAY, seed=0, clock=harness.clock)
    harness.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.app), base_url="http://sandbox.test")
    try:
        token, body = await sender(harness)
        await limit(harness, per_second=4)
        start = harness.clock.now
        answers: list[dict[str, Any]] = []
        for _ in range(6):  # waves of concurrent callers
            answers += await asyncio.gather(*(call(harness, token, body) for _ in range(15)))
        elapsed = harness.clock.now - start
        accepted = sum(a["errcode"] == 0 for a in answers)
        assert {a["errcode"] for a in answers} == {0, 45011}
        stats = (await harness.get("/sandbox/limits"))[TEMPLATE_SEND]
        assert stats["peak_per_second"] == 4
        assert (stats["calls"], stats["rejected"]) == (90, 90 - accepted)
        assert elapsed > 2  # the waves spanned several clock seconds...
        assert accepted <= 4 * (int(elapsed) + 2)  # ...and no second took more than its four
    finally:
        await harness.aclose()


async def test_limits_are_checked_listed_and_cleared(sb: Harness, gateway: respx.MockRouter) -> None:
    for bad, code in [
        ({"path": TEMPLATE_SEND}, 400),
        ({"path": "/sandbox/users", "per_second": 1}, 400),
        ({"path": "cgi-bin/x", "per_second": 1}, 422),
        ({"path": TEMPLATE_SEND, "per_second": 0}, 422),
        ({"path": TEMPLATE_SEND, "per_day": -1}, 422),
        ({"path": TEMPLATE_SEND, "per_second": 1, "burst": 2}, 422),
    ]:
        assert (await sb.http.post("/sandbox/limits", json=bad)).status_code == code, bad
    assert await sb.get("/sandbox/limits") == {}
    token, body = await sender(sb)
    await limit(sb, per_second=1)
    assert (await call(sb, token, body))["errcode"] == 0
    assert await call(sb, token, body) == TOO_FAST
    # Setting a path's limit again starts it afresh.
    await limit(sb, per_second=2)
    assert (await sb.get("/sandbox/limits"))[TEMPLATE_SEND]["calls"] == 0
    assert (await call(sb, token, body))["errcode"] == 0
    assert (await sb.http.delete("/sandbox/limits")).status_code == 204
    assert await sb.get("/sandbox/limits") == {}
    assert [(await call(sb, token, body))["errcode"] for _ in range(5)] == [0] * 5
