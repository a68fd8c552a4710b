"""Notify without WeChat at start: it starts, says why it is not ready, holds events, and catches up.

The rules are checked against WeChat's template library; when WeChat does not answer at start, notify
starts anyway (a WeChat outage must not keep it down), ``/ready`` answers 503 naming the templates,
and the consumer holds events (the library's absence is transient) until a background job has
loaded and checked the library. Nothing is decided without it, and nothing is dead-lettered.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import aio_pika
import httpx

from tests.integration.notify_fixtures import (
    Clock,
    Notify,
    notify_settings,
    purge_notify_queue,
    query,
    sends_of,
    start_notify,
    start_sandbox,
    wait_for,
)
from tests.integration.test_notify_messages import order_paid


class Switch(httpx.AsyncBaseTransport):
    """WeChat as a transport that is away until the test brings it back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.away = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.away:
            raise httpx.ConnectError("WeChat is away", request=request)
        return await self.inner.handle_async_request(request)


async def test_notify_starts_without_wechat_holds_events_and_catches_up(
    clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    await purge_notify_queue(amqp)
    settings = notify_settings(NOTIFY_TEMPLATES_WAIT_SECONDS=0)
    clock = Clock()
    async with AsyncExitStack() as stack:
        sandbox = await start_sandbox(stack, settings.wechat_apps)
        wechat = Switch(httpx.ASGITransport(app=sandbox.app))
        api = await start_notify(stack, sandbox, settings, clock, wechat=wechat)
        notify = Notify(sandbox, amqp, clock, clients=[api])

        ready = await api.get("/ready")
        assert ready.status_code == 503 and "templates" in ready.json()["reasons"], ready.text

        wechat.away = False  # members are known once WeChat answers again (the sandbox follows)
        member_id, _ = await notify.member()
        wechat.away = True
        await notify.publish(order_paid(member_id))

        async def paused() -> bool:
            r = await api.get("/ready")
            return r.status_code == 503 and "consumer" in r.json()["reasons"]

        await wait_for(paused)
        assert await sends_of(member_id) == []  # nothing decided without the library

        wechat.away = False
        await wait_for(lambda: _ready(api), within=30)

        async def sent() -> bool:
            return any(s["status"] in ("sent", "delivered") for s in await sends_of(member_id))

        await wait_for(sent)
        assert await query("SELECT 1 FROM sends WHERE status = 'dead'") == []


async def _ready(api: httpx.AsyncClient) -> bool:
    return (await api.get("/ready")).status_code == 200
