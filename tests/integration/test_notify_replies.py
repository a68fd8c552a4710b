"""notify: the passive-reply rules, and the customer-service fallback when the gateway ran out of time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import asyncpg
import httpx
import pytest
import respx
from prometheus_client import REGISTRY

from services.notify.app import create_app
from services.notify.settings import NotifySettings
from shared.bus.outbox import amqp_message
from shared.bus.topology import Topology
from shared.events import Envelope, ReplyDeferred
from shared.http import INTERNAL_TOKEN_HEADER
from shared.settings import DEV_INTERNAL_TOKEN, load_settings
from tests.conftest import NAMESPACE, db_url
from tests.waiting import eventually

pytestmark = pytest.mark.integration

OA = "wx0000000000000001"
WECHAT = "https://api.weixin.qq.com"


@dataclass
class Notify:
    client: httpx.AsyncClient
    wechat: respx.MockRouter
    send: respx.Route


@pytest.fixture
async def notify(clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[Notify]:
    # Start from an empty queue: earlier tests may have published events notify consumes.
    channel = await amqp.channel()
    topology = Topology(namespace=NAMESPACE)
    await (await topology.declare_consumer(channel, "notify", ["gateway.reply.deferred"])).purge()
    await channel.close()
    app = create_app(load_settings(NotifySettings, wechat_api_base=WECHAT))
    with respx.mock(assert_all_called=False) as wechat:
        wechat.post(f"{WECHAT}/cgi-bin/stable_token").respond(json={"access_token": "T", "expires_in": 7200})
        send = wechat.post(f"{WECHAT}/cgi-bin/message/custom/send").respond(json={"errcode": 0, "errmsg": "ok"})
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://notify.test",
                headers={INTERNAL_TOKEN_HEADER: DEV_INTERNAL_TOKEN},
            ) as client:
                yield Notify(client, wechat, send)


async def deliveries() -> list[dict[str, object]]:
    conn = await asyncpg.connect(db_url("notify"))
    try:
        return [dict(r) for r in await conn.fetch("SELECT channel, openid, status, errcode, body FROM deliveries")]
    finally:
        await conn.close()


async def consumed() -> int:
    conn = await asyncpg.connect(db_url("notify"))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'notify'"))
    finally:
        await conn.close()


def duplicates_absorbed() -> float:
    """How many duplicates notify's consumer has acknowledged without effect (this process)."""
    labels = {"consumer": "notify", "type": "gateway.reply.deferred", "outcome": "duplicate"}
    return REGISTRY.get_sample_value("siyu_events_consumed_total", labels) or 0.0


async def publish_twice_and_wait(amqp: aio_pika.abc.AbstractRobustConnection, data: ReplyDeferred) -> None:
    """Deliver the same event twice and return once the second one has been seen as a duplicate."""
    before = duplicates_absorbed()
    await publish_twice(amqp, data)

    async def second_absorbed() -> bool:
        return duplicates_absorbed() >= before + 1

    await eventually(second_absorbed, what="the second delivery absorbed")


async def publish_twice(amqp: aio_pika.abc.AbstractRobustConnection, data: ReplyDeferred) -> None:
    envelope = Envelope.wrap(data, producer="gateway")
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await Topology(namespace=NAMESPACE).declare_exchanges(channel)
    for _ in range(2):  # the same event, delivered twice
        await exchange.publish(
            amqp_message(envelope.event_id, envelope.type, envelope.model_dump_json().encode(), {}),
            routing_key=envelope.type,
        )
    await channel.close()


@pytest.mark.parametrize(
    ("ask", "expected"),
    [
        ({"trigger": "text", "text": "我的积分是多少"}, "积分"),
        ({"trigger": "text", "text": "HELP"}, "客服"),
        ({"trigger": "subscribe", "scene": "store_42"}, "42 号门店"),
        ({"trigger": "subscribe"}, "欢迎关注"),
        ({"trigger": "click", "key": "POINTS_MALL"}, "积分兑换"),
    ],
)
async def test_rules_answer_keywords_scenes_and_menu_keys(notify: Notify, ask: dict[str, str], expected: str) -> None:
    r = await notify.client.post("/internal/replies", json={"appid": OA, "openid": "o1", **ask})
    assert r.status_code == 200
    assert expected in r.json()["reply"]["content"]


@pytest.mark.parametrize(
    "ask",
    [{"trigger": "text", "text": "天气"}, {"trigger": "scan", "scene": "nowhere"}, {"trigger": "click", "key": "X"}],
)
async def test_no_rule_no_reply(notify: Notify, ask: dict[str, str]) -> None:
    r = await notify.client.post("/internal/replies", json={"appid": OA, "openid": "o1", **ask})
    assert r.json() == {"reply": None}


async def test_reply_endpoint_rejects_bad_input_and_outsiders(notify: Notify) -> None:
    assert (
        await notify.client.post("/internal/replies", json={"appid": OA, "openid": "o", "trigger": "nope"})
    ).status_code == 422
    extra = {"appid": OA, "openid": "o", "trigger": "text", "text": "x", "member_id": "m"}
    assert (await notify.client.post("/internal/replies", json=extra)).status_code == 422
    outsider = await notify.client.post(
        "/internal/replies",
        json={"appid": OA, "openid": "o", "trigger": "text"},
        headers={INTERNAL_TOKEN_HEADER: "wrong"},
    )
    assert outsider.status_code == 401


async def test_deferred_reply_goes_out_once_as_a_customer_service_message(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    await publish_twice_and_wait(
        amqp,
        ReplyDeferred(
            appid=OA, openid="oFan1", push_id=1, trigger="subscribe", scene="store_42", reason="TimeoutError"
        ),
    )
    rows = await deliveries()
    assert len(rows) == 1 and notify.send.call_count == 1
    sent = json.loads(notify.send.calls.last.request.content)
    assert sent["touser"] == "oFan1" and sent["msgtype"] == "text" and "42 号门店" in sent["text"]["content"]
    assert rows[0]["status"] == "sent"


async def test_outside_the_48_hour_window_is_logged_as_rejected_not_retried(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    notify.send.respond(json={"errcode": 45015, "errmsg": "response out of time limit or subscription is canceled"})
    await publish_twice_and_wait(
        amqp, ReplyDeferred(appid=OA, openid="oGone", push_id=2, trigger="click", key="MEMBER_CENTER", reason="x")
    )
    assert [(r["status"], r["errcode"]) for r in await deliveries()] == [("rejected", 45015)]
    assert notify.send.call_count == 1


async def test_an_ambiguous_failure_is_recorded_as_unknown_and_not_sent_again(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    # A 502 after the request left: WeChat may or may not have delivered it.
    notify.send.respond(status_code=502)
    await publish_twice_and_wait(
        amqp, ReplyDeferred(appid=OA, openid="oMaybe", push_id=4, trigger="click", key="MEMBER_CENTER", reason="x")
    )
    assert [r["status"] for r in await deliveries()] == ["unknown"]
    assert notify.send.call_count == 1


async def test_a_deferred_reply_without_a_rule_sends_nothing(notify: Notify, amqp) -> None:  # type: ignore[no-untyped-def]
    await publish_twice_and_wait(
        amqp, ReplyDeferred(appid=OA, openid="o", push_id=3, trigger="text", text="天气", reason="x")
    )
    assert await consumed() == 1  # handled once, its duplicate absorbed by the inbox
    assert await deliveries() == [] and notify.send.call_count == 0
