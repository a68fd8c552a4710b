"""notify: the passive-reply rules it publishes, the replies that need data, and the customer-service
message that follows a reply the gateway could not give in time — sent after its decision committed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import respx
import yaml
from prometheus_client import REGISTRY

from services.notify.app import create_app
from services.notify.deliveries.repository import sweep_stuck
from services.notify.settings import NotifySettings
from shared.bus.topology import Topology, amqp_message
from shared.db import Database
from shared.errors import ConfigurationError
from shared.events import Envelope, ReplyDeferred
from shared.http import INTERNAL_TOKEN_HEADER
from shared.settings import DEV_INTERNAL_TOKEN, load_settings
from tests.conftest import NAMESPACE, ROOT, db_url
from tests.integration.gateway_fixtures import dev_rules, drain, eventually
from tests.integration.notify_fixtures import mock_template_library

pytestmark = pytest.mark.integration

OA = "wx0000000000000001"
WECHAT = "https://api.weixin.qq.com"
COMMERCE = "http://commerce.test"
POINTS = rf"^{COMMERCE}/internal/members/by-openid/(?P<appid>[^/]+)/(?P<openid>[^/]+)/points$"


@dataclass
class Notify:
    client: httpx.AsyncClient
    wechat: respx.MockRouter
    send: respx.Route
    points: respx.Route


def notify_settings(**overrides: Any) -> NotifySettings:
    return load_settings(NotifySettings, wechat_api_base=WECHAT, **{"NOTIFY_COMMERCE_URL": COMMERCE, **overrides})


@pytest.fixture
async def notify(clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[Notify]:
    # Start from an empty queue: earlier tests may have published events notify consumes.
    channel = await amqp.channel()
    await (await Topology(namespace=NAMESPACE).declare_consumer(channel, "notify", ["gateway.reply.deferred"])).purge()
    await channel.close()
    app = create_app(notify_settings())
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{WECHAT}/cgi-bin/stable_token").respond(json={"access_token": "T", "expires_in": 7200})
        mock_template_library(mock, WECHAT, app.state.settings.wechat_apps)
        send = mock.post(f"{WECHAT}/cgi-bin/message/custom/send").respond(json={"errcode": 0, "errmsg": "ok"})
        points = mock.get(url__regex=POINTS).mock(
            side_effect=lambda request, appid, openid: httpx.Response(
                200, json={"member_id": str(uuid.uuid4()), "available": 1280, "pending": 40}
            )
        )
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://notify.test",
                headers={INTERNAL_TOKEN_HEADER: DEV_INTERNAL_TOKEN},
            ) as client:
                yield Notify(client, mock, send, points)


async def deliveries() -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db_url("notify"))
    try:
        rows = await conn.fetch(
            "SELECT channel, openid, status, errcode, body::text AS body FROM deliveries ORDER BY id"
        )
        return [{**dict(r), "body": json.loads(r["body"])} for r in rows]
    finally:
        await conn.close()


def duplicates_absorbed() -> float:
    """How many duplicates notify's consumer has acknowledged without effect (this process)."""
    labels = {"consumer": "notify", "type": "gateway.reply.deferred", "outcome": "duplicate"}
    return REGISTRY.get_sample_value("siyu_events_consumed_total", labels) or 0.0


async def publish_twice(amqp: aio_pika.abc.AbstractRobustConnection, data: ReplyDeferred) -> None:
    """Deliver the same event twice; return once the second was absorbed as a duplicate."""
    before = duplicates_absorbed()
    envelope = Envelope.wrap(data, producer="gateway")
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await Topology(namespace=NAMESPACE).declare_exchanges(channel)
    for _ in range(2):
        await exchange.publish(
            amqp_message(envelope.event_id, envelope.type, envelope.model_dump_json().encode(), {}),
            routing_key=envelope.type,
        )
    await channel.close()

    async def second_absorbed() -> bool:
        return duplicates_absorbed() >= before + 1

    await eventually(second_absorbed)


async def finished() -> list[dict[str, Any]]:
    """The deliveries once none is pending or being sent any more."""

    async def settled() -> list[dict[str, Any]] | None:
        rows = await deliveries()
        return rows if rows and all(r["status"] not in ("pending", "sending") for r in rows) else None

    return await eventually(settled)


def deferred(openid: str, **ask: str) -> ReplyDeferred:
    return ReplyDeferred(appid=OA, openid=openid, push_id=1, reason="TimeoutError", **ask)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- the rules


async def test_notify_publishes_its_rules_at_every_start_with_a_version_that_follows_the_content(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection, event_probe, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    seen: list[dict[str, Any]] = []

    async def published(count: int) -> list[dict[str, Any]]:
        seen.extend(e for e in await drain(event_probe, "notify") if e["type"] == "notify.reply_rules.published")
        return seen if len(seen) >= count else []

    async def run_once(settings: NotifySettings, count: int) -> None:
        app = create_app(settings)
        with respx.mock(assert_all_called=False) as mock:
            mock.post(f"{WECHAT}/cgi-bin/stable_token").respond(json={"access_token": "T", "expires_in": 7200})
            mock_template_library(mock, WECHAT, settings.wechat_apps)
            async with app.router.lifespan_context(app):
                await eventually(lambda: published(count))

    await run_once(notify_settings(), 1)
    # A restart publishes the same version again: a gateway with a new database gets the rules.
    await run_once(notify_settings(), 2)
    assert [e["data"]["version"] for e in seen] == [dev_rules().version] * 2
    assert seen[0]["data"]["rules"]["keywords"][0]["needs"] == "points"

    changed = yaml.safe_load((ROOT / "deploy" / "dev" / "reply-rules.yaml").read_text())
    changed["menu"]["NEWS"] = "上新啦"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(changed, allow_unicode=True))
    await run_once(notify_settings(NOTIFY_REPLY_RULES_FILE=str(path)), 3)
    again = seen[2]
    assert again["data"]["rules"]["menu"]["NEWS"] == "上新啦" and again["data"]["version"] != seen[0]["data"]["version"]


def test_a_rules_file_with_a_typo_or_a_made_up_placeholder_stops_the_start(tmp_path: Path) -> None:
    for rules in (
        {"keywords": [{"match": ["x"], "reply": "y", "mood": "happy"}]},
        {"keywords": [{"match": ["x"], "reply": "你有 {available} 分"}]},  # a fixed reply cannot fill it
        {"menu": {"P": {"needs": "points", "reply": "{balance}"}}},
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(rules, allow_unicode=True))
        with pytest.raises(ConfigurationError):
            create_app(notify_settings(NOTIFY_REPLY_RULES_FILE=str(path)))


# --------------------------------------------------------------------------------------------- /internal/replies


@pytest.mark.parametrize(
    ("ask", "expected"),
    [
        ({"trigger": "text", "text": "HELP"}, "客服"),
        ({"trigger": "subscribe", "scene": "store_42"}, "42 号门店"),
        ({"trigger": "subscribe"}, "欢迎关注"),
        ({"trigger": "click", "key": "POINTS_MALL"}, "积分兑换"),
    ],
)
async def test_fixed_replies_are_answered_too(notify: Notify, ask: dict[str, str], expected: str) -> None:
    r = await notify.client.post("/internal/replies", json={"appid": OA, "openid": "o1", **ask})
    assert r.status_code == 200
    assert expected in r.json()["reply"]["content"] and r.json()["defer"] is False
    assert notify.points.call_count == 0


@pytest.mark.parametrize("ask", [{"trigger": "text", "text": "我的积分"}, {"trigger": "click", "key": "MY_POINTS"}])
async def test_a_reply_that_needs_points_says_the_real_balance(notify: Notify, ask: dict[str, str]) -> None:
    r = await notify.client.post("/internal/replies", json={"appid": OA, "openid": "oFan/1", **ask})
    assert r.status_code == 200
    assert "1280" in r.json()["reply"]["content"] and "40" in r.json()["reply"]["content"]
    assert notify.points.calls.last.request.url.raw_path.decode() == f"/internal/members/by-openid/{OA}/oFan%2F1/points"
    assert notify.points.calls.last.request.headers[INTERNAL_TOKEN_HEADER] == DEV_INTERNAL_TOKEN


async def test_an_unknown_member_gets_the_fallback_never_a_made_up_balance(notify: Notify) -> None:
    notify.points.mock(
        return_value=httpx.Response(
            404, json={"type": "https://siyu.dev/problems/member-not-found", "title": "x", "status": 404, "detail": "x"}
        )
    )
    r = await notify.client.post(
        "/internal/replies", json={"appid": OA, "openid": "o", "trigger": "text", "text": "积分"}
    )
    assert r.json() == {"reply": {"msgtype": "text", "content": dev_rules().keywords[0].fallback}, "defer": False}


@pytest.mark.parametrize(
    "commerce",
    [
        httpx.Response(404, json={"detail": "Not Found"}),  # commerce without the route yet
        httpx.Response(503),
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"available": "lots"}),
    ],
    ids=["no-such-route", "busy", "down", "garbled"],
)
async def test_when_commerce_cannot_answer_notify_says_defer(notify: Notify, commerce: Any) -> None:
    if isinstance(commerce, Exception):
        notify.points.mock(side_effect=commerce)
    else:
        notify.points.mock(return_value=commerce)
    r = await notify.client.post(
        "/internal/replies", json={"appid": OA, "openid": "o", "trigger": "text", "text": "积分"}
    )
    assert r.status_code == 200 and r.json() == {"reply": None, "defer": True}


@pytest.mark.parametrize(
    "ask",
    [{"trigger": "text", "text": "天气"}, {"trigger": "scan", "scene": "nowhere"}, {"trigger": "click", "key": "X"}],
)
async def test_no_rule_no_reply(notify: Notify, ask: dict[str, str]) -> None:
    r = await notify.client.post("/internal/replies", json={"appid": OA, "openid": "o1", **ask})
    assert r.json() == {"reply": None, "defer": False}


async def test_reply_endpoint_rejects_bad_input_and_outsiders(notify: Notify) -> None:
    bad = [
        {"appid": OA, "openid": "o", "trigger": "nope"},
        {"appid": OA, "openid": "o", "trigger": "text", "text": "x", "member_id": "m"},
        {"appid": OA, "openid": "o", "trigger": "text", "text": "x" * 2049},
        {"appid": OA, "openid": "", "trigger": "text", "text": "x"},
    ]
    for body in bad:
        assert (await notify.client.post("/internal/replies", json=body)).status_code == 422, body
    outsider = await notify.client.post(
        "/internal/replies",
        json={"appid": OA, "openid": "o", "trigger": "text"},
        headers={INTERNAL_TOKEN_HEADER: "wrong"},
    )
    assert outsider.status_code == 401
    assert notify.points.call_count == 0


# --------------------------------------------------------------------------------------------- deferred replies


async def test_deferred_reply_goes_out_once_as_a_customer_service_message(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    await publish_twice(amqp, deferred("oFan1", trigger="subscribe", scene="store_42"))
    rows = await finished()
    assert [(r["channel"], r["status"]) for r in rows] == [("customer_service", "sent")]
    assert notify.send.call_count == 1
    sent = json.loads(notify.send.calls.last.request.content)
    assert sent["touser"] == "oFan1" and sent["msgtype"] == "text" and "42 号门店" in sent["text"]["content"]


async def test_the_points_a_deferred_reply_promised_are_sent_real(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    await publish_twice(amqp, deferred("oFan2", trigger="text", text="积分多少"))
    await finished()
    content = json.loads(notify.send.calls.last.request.content)["text"]["content"]
    assert "1280" in content and notify.send.call_count == 1


async def test_when_commerce_is_still_away_the_fallback_goes_out_not_a_balance(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    notify.points.mock(side_effect=httpx.ConnectError("refused"))
    await publish_twice(amqp, deferred("oFan3", trigger="click", key="MY_POINTS"))
    await finished()
    content = json.loads(notify.send.calls.last.request.content)["text"]["content"]
    assert content == "积分可在小程序「会员中心」查看。"


async def test_wechat_is_called_after_the_decision_committed(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    """When WeChat is called, another connection already sees the delivery, claimed: the inbox
    transaction that decided it has committed, and the claim guards against a second send."""
    seen: list[str] = []

    async def wechat(request: httpx.Request) -> httpx.Response:
        conn = await asyncpg.connect(db_url("notify"))
        try:
            seen.extend(r["status"] for r in await conn.fetch("SELECT status FROM deliveries"))
        finally:
            await conn.close()
        return httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})

    notify.send.mock(side_effect=wechat)
    await publish_twice(amqp, deferred("oFan4", trigger="subscribe"))
    assert [r["status"] for r in await finished()] == ["sent"]
    assert seen == ["sending"]


async def test_outside_the_48_hour_window_is_logged_as_rejected_not_retried(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    notify.send.respond(json={"errcode": 45015, "errmsg": "response out of time limit or subscription is canceled"})
    await publish_twice(amqp, deferred("oGone", trigger="click", key="MEMBER_CENTER"))
    assert [(r["status"], r["errcode"]) for r in await finished()] == [("rejected", 45015)]
    assert notify.send.call_count == 1


async def test_an_ambiguous_failure_is_recorded_as_unknown_and_not_sent_again(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    # A 502 after the request left: WeChat may or may not have delivered it.
    notify.send.respond(status_code=502)
    await publish_twice(amqp, deferred("oMaybe", trigger="click", key="MEMBER_CENTER"))
    assert [r["status"] for r in await finished()] == ["unknown"]
    assert notify.send.call_count == 1


async def test_a_deferred_reply_without_a_rule_sends_nothing(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    await publish_twice(amqp, deferred("o", trigger="text", text="天气"))
    assert await deliveries() == [] and notify.send.call_count == 0


async def test_a_send_that_never_reported_back_is_swept_to_unknown_not_resent(clean_databases: dict[str, str]) -> None:
    """The sender died between claiming and recording: after the horizon the delivery is unknown."""
    db = await Database(db_url("notify"), producer="notify").open()
    try:
        async with db.connection() as conn:
            await conn.execute(
                "INSERT INTO deliveries (channel, appid, openid, source_event_id, body, status, claimed_at, attempts) "
                "VALUES ('customer_service', $1, 'o', $2, '{}', 'sending', now() - interval '10 minutes', 1), "
                "('customer_service', $1, 'o', $3, '{}', 'sending', now(), 1)",
                OA,
                str(uuid.uuid4()),
                str(uuid.uuid4()),
            )
        assert await sweep_stuck(db, 300) == 1
        assert await sweep_stuck(db, 300) == 0
    finally:
        await db.close()
    assert sorted(r["status"] for r in await deliveries()) == ["sending", "unknown"]
