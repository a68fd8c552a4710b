"""notify's limits: marketing caps exact across two replicas, quiet hours, quotas, WeChat's rate codes,
retries and dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest

from shared.events.commerce import OrderPaid
from tests.integration.notify_fixtures import (
    Clock,
    Notify,
    beijing,
    notify_stack,
    open_window,
    query,
    sends_of,
    wait_for,
)

pytestmark = pytest.mark.integration

TEMPLATE = "/cgi-bin/message/template/send"


def paid(member_id: str, order_id: str) -> OrderPaid:
    from datetime import UTC, datetime

    return OrderPaid(
        order_id=order_id,
        shop_appid="wx0000000000000003",
        member_id=member_id,
        status=20,
        paid_fen=100,
        title="面霜",
        item_count=1,
        update_time=1,
        paid_at=datetime.now(UTC),
    )


async def campaign(notify: Notify, member_ids: list[str], name: str = "spring", api: int = 0) -> str:
    r = await notify.clients[api].post(
        "/internal/campaigns",
        json={
            "name": name,
            "audience": {"member_ids": member_ids},
            "kind": "marketing",
            "message": {"title": "会员日双倍积分", "body": "今天下单积分翻倍", "page": "pages/campaign/index"},
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["campaign_id"])


async def settled(notify: Notify, campaign_id: str) -> dict[str, Any]:
    async def done() -> Any:
        body = (await notify.api.get(f"/internal/campaigns/{campaign_id}")).json()
        return body["state"] == "completed" and body

    return await wait_for(done, within=30)


async def test_caps_are_exact_with_two_replicas_sending_at_once(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async for notify in notify_stack(amqp, replicas=2, SIYU_MARKETING_CAP_DAY=2, SIYU_MARKETING_CAP_WEEK=3):
        members = []
        for _ in range(8):
            member_id, user = await notify.member(follow=True, mp=False)
            await open_window(notify, user)  # five customer-service messages allowed
            members.append((member_id, user))
        ids = [m for m, _ in members]
        campaigns = [await campaign(notify, ids, f"c{i}", api=i % 2) for i in range(4)]
        # Four campaigns started at once, through both replicas.
        starts = [notify.clients[i % 2].post(f"/internal/campaigns/{c}/start") for i, c in enumerate(campaigns)]
        assert all(r.status_code == 202 for r in await asyncio.gather(*starts))
        recaps = [await settled(notify, c) for c in campaigns]
        for member_id, user in members:
            rows = await sends_of(member_id)
            assert len(rows) == 4
            assert sum(r["status"] == "sent" for r in rows) == 2  # the day's cap, exactly
            assert sum(r["reason"] == "cap_reached" for r in rows) == 2
            delivered = [m for m in await notify.sandbox.inbox(user) if m["kind"] == "customer_service"]
            assert len(delivered) == 2
        assert sum(r["sent"] for r in recaps) == 16
        assert sum(r["skipped"].get("cap_reached", 0) for r in recaps) == 16


async def test_quiet_hours_defer_marketing_until_they_end(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    clock = Clock(beijing(2026, 12, 4, 23, 30))
    async for notify in notify_stack(amqp, clock=clock, SIYU_QUIET_HOURS="22:00-08:00"):
        member_id, user = await notify.member(follow=True, mp=False)
        await open_window(notify, user)
        # A transactional message is not held by quiet hours.
        await notify.publish(paid(member_id, "1"))
        cid = await campaign(notify, [member_id])
        assert (await notify.api.post(f"/internal/campaigns/{cid}/start")).status_code == 202

        async def deferred() -> Any:
            rows = [r for r in await sends_of(member_id) if r["campaign_id"]]  # noqa: B023 - awaited in this iteration
            return rows and rows[0]["status"] == "deferred" and rows[0]

        row = await wait_for(deferred)
        assert row["reason"] == "quiet_hours" and row["due_at"] == beijing(2026, 12, 5, 8)
        await wait_for(lambda: query("SELECT 1 FROM sends WHERE rule = 'order_paid' AND status = 'sent'"))
        assert [m["kind"] for m in await notify.sandbox.inbox(user)] == ["template"]
        clock.set(beijing(2026, 12, 5, 8, 1))
        recap = await settled(notify, cid)
        assert recap["sent"] == 1
        assert sorted(m["kind"] for m in await notify.sandbox.inbox(user)) == ["customer_service", "template"]


async def test_own_daily_quota_defers_to_beijing_midnight(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async for notify in notify_stack(amqp, NOTIFY_DAILY_QUOTAS={TEMPLATE: 2}):
        members = [(await notify.member(follow=True, mp=False))[0] for _ in range(3)]
        for i, m in enumerate(members):
            await notify.publish(paid(m, str(i)))

        async def all_decided() -> Any:
            rows = await query("SELECT status, reason, due_at FROM sends ORDER BY id")
            return len(rows) == 3 and all(r["status"] != "pending" for r in rows) and rows

        rows = await wait_for(all_decided)
        assert sorted(r["status"] for r in rows) == ["deferred", "sent", "sent"]
        [held] = [r for r in rows if r["status"] == "deferred"]
        assert held["reason"] == "quota_exhausted"
        [budget] = await query("SELECT used FROM api_budgets WHERE api = $1", TEMPLATE)
        assert budget["used"] == 2
        assert (held["due_at"].timestamp() + 8 * 3600) % 86400 == 0  # Beijing midnight


async def test_wechat_daily_quota_45009_pauses_the_app(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async for notify in notify_stack(amqp):
        await notify.sandbox.post("/sandbox/limits", {"path": TEMPLATE, "per_day": 1})
        members = [(await notify.member(follow=True, mp=False))[0] for _ in range(3)]
        for i, m in enumerate(members):
            await notify.publish(paid(m, str(i)))
            await wait_for(lambda m=m: query("SELECT 1 FROM sends WHERE member_id = $1 AND status <> 'pending'", m))
        rows = await query("SELECT status, reason FROM sends ORDER BY id")
        assert [(r["status"], r["reason"]) for r in rows] == [
            ("sent", None),
            ("deferred", "45009"),
            ("deferred", "paused"),
        ]
        limits = await notify.sandbox.get("/sandbox/limits")
        assert limits[TEMPLATE]["calls"] == 2  # the paused app did not call again


async def test_minute_quota_45011_backs_off_and_then_sends(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async for notify in notify_stack(amqp, NOTIFY_API_RATES={TEMPLATE: 1000}):
        await notify.sandbox.post("/sandbox/limits", {"path": TEMPLATE, "per_second": 1})
        members = [(await notify.member(follow=True, mp=False))[0] for _ in range(3)]
        for i, m in enumerate(members):
            await notify.publish(paid(m, str(i)))

        async def all_sent() -> bool:
            rows = await query("SELECT status FROM sends")
            return len(rows) == 3 and all(r["status"] == "sent" for r in rows)

        await wait_for(all_sent, within=30)
        limits = await notify.sandbox.get("/sandbox/limits")
        assert limits[TEMPLATE]["rejected"] >= 1
        assert limits[TEMPLATE]["peak_per_second"] == 1
        assert await query("SELECT 1 FROM api_budgets WHERE paused_until IS NOT NULL")


async def test_busy_is_retried_with_backoff_then_dead_lettered_and_redriven(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async for notify in notify_stack(amqp, NOTIFY_SEND_MAX_ATTEMPTS=3):
        await notify.sandbox.post("/sandbox/faults", {"path": TEMPLATE, "errcode": -1, "count": 2})
        a, user_a = await notify.member(follow=True, mp=False)
        await notify.publish(paid(a, "1"))
        await wait_for(lambda: query("SELECT 1 FROM sends WHERE status = 'sent'"))
        [row] = await sends_of(a)
        assert row["attempts"] == 3
        assert len(await notify.sandbox.inbox(user_a)) == 1

        await notify.sandbox.post("/sandbox/faults", {"path": TEMPLATE, "errcode": -1, "count": 3})
        b, user_b = await notify.member(follow=True, mp=False)
        await notify.publish(paid(b, "2"))
        await wait_for(lambda: query("SELECT 1 FROM sends WHERE dead"))
        [dead] = (await notify.api.get("/internal/dead-letters")).json()
        assert dead["member_id"] == b and dead["reason"] == "-1"
        assert (await notify.api.post("/internal/dead-letters/send-999999/redrive")).status_code == 404
        assert (await notify.api.post("/internal/dead-letters/nonsense/redrive")).status_code == 404
        assert (await notify.api.post(f"/internal/dead-letters/{dead['id']}/redrive")).status_code == 202
        await wait_for(lambda b=b: query("SELECT 1 FROM sends WHERE member_id = $1 AND status = 'sent'", b))
        assert (await notify.api.get("/internal/dead-letters")).json() == []
        assert len(await notify.sandbox.inbox(user_b)) == 1


async def test_permanent_errors_are_recorded_and_give_the_authorisation_back(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async for notify in notify_stack(amqp):
        from tests.integration.notify_fixtures import MP

        member_id, user = await notify.member(follow=False)
        tid = await notify.sandbox.template_id(MP, "订单支付成功通知", "subscribe_once")
        await notify.popup(user, MP, {tid: "accept"})
        await notify.sandbox.post(
            "/sandbox/faults", {"path": "/cgi-bin/message/subscribe/send", "errcode": 41030, "count": 1}
        )
        await notify.publish(paid(member_id, "1"))
        await wait_for(lambda: query("SELECT 1 FROM sends WHERE status = 'failed'"))
        [row] = await sends_of(member_id)
        assert (row["reason"], row["errcode"], row["dead"]) == ("41030", 41030, False)
        [auth] = await query("SELECT remaining FROM authorisations WHERE template_id = $1", tid)
        assert auth["remaining"] == 1
