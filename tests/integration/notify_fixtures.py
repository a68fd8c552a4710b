"""Harness for notify's messaging tests (``test_notify_*.py``).

Real PostgreSQL (this run's notify database, truncated per test) and RabbitMQ (this run's
namespace): notify runs in-process with its real lifespan — consumer, relay, sender, campaign and
reminder jobs — and events reach it through the broker. WeChat is the sandbox, in-process; its
pushes (receipts, popups) are played to notify as the gateway would publish them.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import httpx
from fastapi import FastAPI

from services.notify.app import create_app
from services.notify.settings import NotifySettings
from shared.bus.topology import Topology, amqp_message
from shared.events import EventData, FollowChanged, MemberRegistered, WeChatPushReceived
from shared.events.envelope import Envelope
from shared.http import INTERNAL_TOKEN_HEADER
from shared.settings import DEV_INTERNAL_TOKEN, load_settings
from tests.conftest import NAMESPACE, db_url
from tests.waiting import eventually as wait_for  # the one polling helper, under this module's name
from tools.wechat_sandbox import create_app as create_sandbox

OA = "wx0000000000000001"
MP = "wx0000000000000002"
SHOP = "wx0000000000000003"
SANDBOX = "http://sandbox.test"
_push_ids = itertools.count(1)


class Clock:
    """notify's clock, movable by the test (quiet hours, Beijing days)."""

    def __init__(self, now: datetime | None = None) -> None:
        self.offset = timedelta(0)
        if now is not None:
            self.set(now)

    def set(self, now: datetime) -> None:
        self.offset = now - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Sandbox:
    app: FastAPI
    http: httpx.AsyncClient

    async def post(self, path: str, body: Any = None) -> Any:
        r = await self.http.post(path, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()

    async def get(self, path: str) -> Any:
        r = await self.http.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    async def inbox(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.get(f"/sandbox/users/{user['user_id']}/inbox")  # type: ignore[no-any-return]

    async def templates(self, appid: str) -> list[dict[str, Any]]:
        return await self.get(f"/sandbox/templates?appid={appid}")  # type: ignore[no-any-return]

    async def template_id(self, appid: str, title: str, kind: str) -> str:
        return next(t["template_id"] for t in await self.templates(appid) if t["title"] == title and t["kind"] == kind)


@dataclass
class Notify:
    sandbox: Sandbox
    amqp: aio_pika.abc.AbstractRobustConnection
    clock: Clock
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def api(self) -> httpx.AsyncClient:
        return self.clients[0]

    async def publish(
        self, data: EventData, event_type: str | None = None, envelope: Envelope | None = None
    ) -> Envelope:
        envelope = envelope or Envelope.wrap(data, producer="test", event_type=event_type)
        channel = await self.amqp.channel(publisher_confirms=True)
        exchange = await Topology(namespace=NAMESPACE).declare_exchanges(channel)
        await exchange.publish(
            amqp_message(envelope.event_id, envelope.type, envelope.model_dump_json().encode(), {}),
            routing_key=envelope.type,
        )
        await channel.close()
        return envelope

    async def push(self, kind: str, appid: str, openid: str, payload: dict[str, Any]) -> Envelope:
        """A WeChat push as the gateway publishes it."""
        name = str(payload.get("Event") or payload.get("MsgType")).lower()
        msg_id = payload.get("MsgID") or payload.get("MsgId")
        data = WeChatPushReceived(
            appid=appid,
            app_kind=kind,
            name=name,
            openid=openid,
            create_time=int(time.time()),
            msg_id=str(msg_id) if msg_id is not None else None,
            dedup_key=uuid.uuid4().hex,
            push_id=next(_push_ids),
            payload={"FromUserName": openid, "CreateTime": str(int(time.time())), **payload},
        )
        return await self.publish(data, event_type=f"wechat.{kind}.{name}")

    async def member(self, *, follow: bool = True, mp: bool = True) -> tuple[str, dict[str, Any]]:
        """A sandbox user who is a member notify knows (identity's events), following the OA or not."""
        user = await self.sandbox.post("/sandbox/users", {"unionid_bound": True})
        member_id = str(uuid.uuid4())
        await self.publish(
            MemberRegistered(
                member_id=member_id,
                appid=OA,
                app_kind="official_account",
                openid=user["openids"][OA],
                source="oa_subscribe",
            )
        )
        if mp:
            await self.publish(
                MemberRegistered(
                    member_id=member_id,
                    appid=MP,
                    app_kind="mini_program",
                    openid=user["openids"][MP],
                    source="mp_login",
                )
            )
        if follow:
            await self.sandbox.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": OA})
            await self.publish(
                FollowChanged(
                    member_id=member_id, appid=OA, openid=user["openids"][OA], subscribed=True, change="subscribe"
                )
            )

        async def known() -> bool:
            rows = await query("SELECT following FROM member_apps WHERE member_id = $1", member_id)
            return len(rows) == (2 if mp else 1) and (not follow or any(r["following"] for r in rows))

        await wait_for(known)
        return member_id, user

    async def popup(self, user: dict[str, Any], appid: str, results: dict[str, str]) -> None:
        """The member answers a subscribe popup: in the sandbox, and WeChat's push to notify."""
        await self.sandbox.post(
            f"/sandbox/users/{user['user_id']}/subscribe-popup", {"appid": appid, "results": results}
        )
        items = [{"TemplateId": t, "SubscribeStatusString": a, "PopupScene": "0"} for t, a in results.items()]
        kind = "mp" if appid == MP else "oa"
        await self.push(
            kind,
            appid,
            user["openids"][appid],
            {"MsgType": "event", "Event": "subscribe_msg_popup_event", "List": items},
        )
        openid = user["openids"][appid]

        async def recorded() -> bool:
            rows = await query(
                "SELECT template_id FROM authorisations WHERE appid = $1 AND openid = $2 AND (remaining > 0 OR long_term)",
                appid,
                openid,
            )
            accepted = {t for t, a in results.items() if a == "accept"}
            return accepted <= {r["template_id"] for r in rows}

        await wait_for(recorded)


async def query(sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url("notify"))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def sends_of(member_id: str) -> list[asyncpg.Record]:
    return await query("SELECT * FROM sends WHERE member_id = $1 ORDER BY id", member_id)


def notify_settings(**overrides: Any) -> NotifySettings:
    base: dict[str, Any] = {
        "wechat_api_base": SANDBOX,
        "NOTIFY_SENDER_POLL_SECONDS": 0.02,
        "NOTIFY_JOBS_POLL_SECONDS": 0.1,
        "NOTIFY_SEND_BACKOFF_SECONDS": 0.05,
        "NOTIFY_MINUTE_QUOTA_BACKOFF_SECONDS": 0.5,
        "SIYU_QUIET_HOURS": "",
    }
    return load_settings(NotifySettings, **{**base, **overrides})


@dataclass
class Stack:
    exit: AsyncExitStack
    sandbox: Sandbox


async def start_sandbox(stack: AsyncExitStack, apps: Any) -> Sandbox:
    sink = httpx.MockTransport(lambda _: httpx.Response(200, text="success"))
    app = create_sandbox(apps, "http://gateway.invalid", seed=uuid.uuid4().int % 10**6, transport=sink)
    http = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SANDBOX))
    stack.push_async_callback(app.state.pusher.aclose)
    return Sandbox(app, http)


async def start_notify(
    stack: AsyncExitStack,
    sandbox: Sandbox,
    settings: NotifySettings,
    clock: Clock,
    *,
    identity: httpx.AsyncClient | None = None,
    commerce: httpx.AsyncClient | None = None,
    wechat: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    app = create_app(
        settings,
        clock=clock,
        wechat_transport=wechat or httpx.ASGITransport(app=sandbox.app),
        identity=identity,
        commerce=commerce,
    )
    await stack.enter_async_context(app.router.lifespan_context(app))
    return await stack.enter_async_context(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://notify.test",
            headers={INTERNAL_TOKEN_HEADER: DEV_INTERNAL_TOKEN},
        )
    )


async def purge_notify_queue(amqp: aio_pika.abc.AbstractRobustConnection) -> None:
    from services.notify.subscriptions import SUBSCRIPTIONS

    channel = await amqp.channel()
    queue = await Topology(namespace=NAMESPACE).declare_consumer(channel, "notify", list(SUBSCRIPTIONS))
    await queue.purge()
    await channel.close()


async def notify_stack(
    amqp: aio_pika.abc.AbstractRobustConnection, replicas: int = 1, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[Notify]:
    await purge_notify_queue(amqp)
    settings = notify_settings(**overrides)
    clock = clock or Clock()
    async with AsyncExitStack() as stack:
        sandbox = await start_sandbox(stack, settings.wechat_apps)
        notify = Notify(sandbox, amqp, clock)
        commerce = (
            await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.MockTransport(lambda _: httpx.Response(404)), base_url="http://commerce.invalid"
                )
            )
            if "commerce" not in overrides
            else None
        )
        for _ in range(replicas):
            notify.clients.append(await start_notify(stack, sandbox, settings, clock, commerce=commerce))
        yield notify


async def open_window(notify: Notify, user: dict[str, Any]) -> None:
    """The member writes to the service account: WeChat (the sandbox) and notify both open the window."""
    await notify.sandbox.post(f"/sandbox/users/{user['user_id']}/messages", {"appid": OA, "text": "你好"})
    openid = user["openids"][OA]
    await notify.push("oa", OA, openid, {"MsgType": "text", "Content": "你好", "MsgId": str(uuid.uuid4().int % 10**18)})
    await wait_for(lambda: query("SELECT 1 FROM service_windows WHERE openid = $1 AND remaining > 0", openid))


def beijing(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC) - timedelta(hours=8)


def mock_template_library(router: Any, base: str, apps: Any) -> None:
    """For a respx-mocked WeChat: the template lists notify reads at start, as the sandbox keeps them."""
    from tools.wechat_sandbox.messages import NEWTMPL_TYPE, TEMPLATE, TemplateLibrary

    library = TemplateLibrary(apps, seed=0)

    def oa_templates(request: httpx.Request) -> httpx.Response:
        items = [t for a in apps.apps for t in library.of_app(a.appid) if t.kind == TEMPLATE]
        return httpx.Response(
            200,
            json={
                "template_list": [{"template_id": t.template_id, "title": t.title, "content": t.content} for t in items]
            },
        )

    def subscribe_templates(request: httpx.Request) -> httpx.Response:
        # One answer for every app: the ids differ per app, but only the titles and fields are checked.
        items = [t for t in library.of_app(apps.apps[1].appid if len(apps.apps) > 1 else "") if t.kind in NEWTMPL_TYPE]
        oa = [t for a in apps.apps for t in library.of_app(a.appid) if t.kind in NEWTMPL_TYPE]
        data = [
            {"priTmplId": t.template_id, "title": t.title, "content": t.content, "type": NEWTMPL_TYPE[t.kind]}
            for t in oa + items
        ]
        return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "data": data})

    router.get(f"{base}/cgi-bin/template/get_all_private_template").mock(side_effect=oa_templates)
    router.get(f"{base}/wxaapi/newtmpl/gettemplate").mock(side_effect=subscribe_templates)
