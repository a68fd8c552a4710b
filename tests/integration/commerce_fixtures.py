"""Harness for commerce's integration tests (``test_commerce_*.py``).

Real PostgreSQL (this run's databases, truncated per test) and RabbitMQ (this run's namespace),
with in-process:

* **commerce** — the real app factory with its lifespan: asyncpg pool, broker, its consumer on
  this run's ``commerce`` queue and its outbox relay (``SIYU_RELAY_IN_PROCESS``); only WeChat and
  identity are pointed in-process, and the periodic jobs are called by the tests (``*_once``);
* **identity** — its real app (routers, asyncpg, its own database) behind ``ASGITransport``: commerce
  resolves buyers, givers, recipients and sharers through its real ``/internal/identities``;
* **the WeChat sandbox** — the stateful shop (catalog, orders, gifts, after-sales, ``/channels/ec``).
  Its pushes land in a sink that decrypts them as the gateway does; :meth:`Commerce.deliver_pushes`
  hands each to commerce's consumer as the envelope the gateway would publish (``handle``: the
  same code path as a broker delivery, inbox included).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.commerce.app import create_app
from services.commerce.deps import CommerceDeps
from services.commerce.identity_client import IdentityClient
from services.commerce.settings import CommerceSettings
from services.gateway.pushes.schemas import PushQuery
from services.gateway.pushes.service import decode_push
from services.identity.app import ROUTERS as IDENTITY_ROUTERS
from services.identity.deps import IdentityDeps, make_vault
from services.identity.settings import IdentitySettings
from shared.app import Runtime, create_service_app
from shared.bus.consumer import InboxConsumer
from shared.events import MemberMerged, WeChatPushReceived
from shared.events.envelope import Envelope
from shared.http import create_client
from shared.settings import DEV_INTERNAL_TOKEN, load_settings
from shared.wechat.apps import AppKind, WeChatApps
from shared.wechat.client import WeChatClient
from shared.wechat.crypto import MessageCrypto
from shared.wechat.push import parse_push
from tests.conftest import db_url, truncate
from tools.wechat_sandbox import create_app as create_sandbox

MP = "wx0000000000000002"
SHOP = "wx0000000000000003"
SANDBOX = "http://sandbox.test"
_push_ids = itertools.count(1)


class Clock:
    """commerce's injectable clock: real time, moved by the tests across boundaries (or frozen)."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return self.frozen if self.frozen is not None else datetime.now(UTC) + self.offset

    def freeze(self, at: datetime) -> None:
        self.frozen = at

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


class ShopSandbox:
    """The in-process sandbox. Its pushes are decrypted and kept (``pushed``) instead of posted."""

    def __init__(self, apps: WeChatApps) -> None:
        self.apps = apps
        self.pushed: list[dict[str, Any]] = []
        self.now = float(int(time.time()))
        self.app = create_sandbox(
            apps,
            "http://gateway.invalid",
            seed=uuid.uuid4().int % 10**6,
            clock=lambda: self.now,
            transport=httpx.MockTransport(self._receive),
        )
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=SANDBOX)

    def _receive(self, request: httpx.Request) -> httpx.Response:
        appid = request.url.path.rsplit("/", 1)[-1]
        app = self.apps.get(appid)
        assert app is not None
        query = PushQuery.from_params(dict(request.url.params))
        decoded = decode_push(
            app, MessageCrypto.for_app(app), query, request.content, request.headers.get("content-type", ""), 1 << 20
        )
        self.pushed.append(decoded.payload)
        return httpx.Response(200, text="success")

    def wechat_client(self) -> WeChatClient:
        http = create_client(SANDBOX, retries=0, transport=httpx.ASGITransport(app=self.app))
        return WeChatClient(http, self.apps, backoff=0.001)

    async def post(self, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
        r = await self.http.post(path, json=body)
        assert r.status_code in expect, r.text
        return r.json()

    async def get(self, path: str) -> Any:
        r = await self.http.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    async def user(self, **body: Any) -> dict[str, Any]:
        return await self.post("/sandbox/users", body)  # type: ignore[no-any-return]

    async def products(self) -> list[dict[str, Any]]:
        return await self.get("/sandbox/shop/products")  # type: ignore[no-any-return]

    async def order(self, user: dict[str, Any], sku: dict[str, Any], count: int = 1, **extra: Any) -> str:
        self.now += 1
        body = {
            "user_id": user["user_id"],
            "items": [{"product_id": sku["product_id"], "sku_id": sku["sku_id"], "count": count}],
        }
        answer = await self.post("/sandbox/shop/orders", body | extra)
        return str(answer["order_id"])

    async def gift(self, giver: dict[str, Any], sku: dict[str, Any]) -> tuple[str, str]:
        """A gift order of one item: (order_id, present_order_id)."""
        self.now += 1
        item = {"product_id": sku["product_id"], "sku_id": sku["sku_id"], "count": 1}
        answer = await self.post("/sandbox/shop/orders", {"user_id": giver["user_id"], "items": [item], "gift": True})
        return str(answer["order_id"]), str(answer["present_order_id"])

    async def accept(self, present_order_id: str, recipient: dict[str, Any], sku_id: str | None = None) -> None:
        self.now += 1
        body = {"user_id": recipient["user_id"], "sku_id": sku_id}
        await self.post(f"/sandbox/shop/gifts/{present_order_id}/accept", body)

    async def expire(self, present_order_id: str, push: str = "once") -> None:
        self.now += 1
        await self.post(f"/sandbox/shop/gifts/{present_order_id}/expire", {"push": push})

    async def act(self, order_id: str, action: str, push: str = "once") -> dict[str, Any]:
        self.now += 1
        return await self.post(f"/sandbox/shop/orders/{order_id}/{action}", {"push": push})  # type: ignore[no-any-return]

    async def aftersale(
        self, order_id: str, sku_id: str, count: int = 1, kind: str = "REFUND", push: str = "once"
    ) -> str:
        self.now += 1
        body = {"sku_id": sku_id, "count": count, "type": kind, "push": push}
        return str((await self.post(f"/sandbox/shop/orders/{order_id}/aftersales", body))["after_sale_order_id"])

    async def close_aftersale(self, after_sale_order_id: str, action: str = "refund", push: str = "once") -> None:
        self.now += 1
        await self.post(f"/sandbox/shop/aftersales/{after_sale_order_id}/{action}", {"push": push})

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.app.state.pusher.aclose()


def shop_envelope(payload: dict[str, Any], appid: str = SHOP) -> Envelope:
    """The envelope the gateway publishes for a shop push."""
    push = parse_push(payload, AppKind.SHOP)
    name = str(payload["Event"]).lower()
    data = WeChatPushReceived(
        appid=appid,
        app_kind="shop",
        name=name,
        openid=payload.get("FromUserName"),
        create_time=int(payload["CreateTime"]),
        dedup_key=push.dedup_key,
        push_id=next(_push_ids),
        payload=payload,
    )
    return Envelope.wrap(data, producer="gateway", event_type=f"wechat.shop.{name}")


@dataclass
class Commerce:
    api: httpx.AsyncClient
    deps: CommerceDeps
    sandbox: ShopSandbox
    identity: httpx.AsyncClient
    clock: Clock
    consumer: InboxConsumer[CommerceDeps]
    delivered: list[str] = field(default_factory=list)

    async def deliver(self, envelope: Envelope) -> str:
        """One broker delivery of ``envelope`` to commerce's consumer: ``handled`` or ``duplicate``."""
        outcome = await self.consumer.handle(envelope.model_dump_json().encode())
        self.delivered.append(outcome)
        return outcome

    async def deliver_pushes(self) -> list[Envelope]:
        """Every push the sandbox made since the last call, each as its own gateway event."""
        pushes, self.sandbox.pushed[:] = list(self.sandbox.pushed), []
        envelopes = [shop_envelope(p) for p in pushes]
        for envelope in envelopes:
            await self.deliver(envelope)
        return envelopes

    def drop_pushes(self) -> None:
        """The pushes made so far are lost."""
        self.sandbox.pushed.clear()

    async def merge(self, merged_id: str, survivor_id: str) -> str:
        data = MemberMerged(survivor_id=survivor_id, merged_id=merged_id, reason="phone")
        return await self.deliver(Envelope.wrap(data, producer="identity"))

    async def member_of(self, user: dict[str, Any], appid: str = SHOP) -> str:
        r = await self.identity.post("/internal/resolve", json={"appid": appid, "openid": user["openids"][appid]})
        assert r.status_code == 200, r.text
        return str(r.json()["member_id"])

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(db_url("commerce"))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def val(self, query: str, *args: Any) -> Any:
        return (await self.sql(query, *args))[0][0]

    async def published(self, event_type: str | None = None) -> list[dict[str, Any]]:
        rows = await self.sql("SELECT body FROM outbox ORDER BY id")
        out = [json.loads(bytes(r["body"])) for r in rows]
        return [e for e in out if event_type is None or e["type"] == event_type]

    async def points(self, member_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/internal/members/{member_id}/points")
        assert r.status_code == 200, r.text
        return r.json()["points"]  # type: ignore[no-any-return]

    async def ledger_check(self) -> None:
        """The reconciliation finds nothing: every balance is the sum of its ledger and its lots."""
        from services.commerce.reconcile import check

        _, accounts, lots = await check(self.deps.db)
        assert accounts == [] and lots == [], (accounts, lots)


def _internal_client(app: Any, base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url, headers={"X-Siyu-Internal-Token": DEV_INTERNAL_TOKEN}
    )


async def _identity_app(stack: list[Any]) -> Any:
    settings = load_settings(IdentitySettings, relay_in_process=False, schedule_interval_seconds=0)
    apps = settings.wechat_apps

    async def make_deps(rt: Runtime[IdentitySettings]) -> IdentityDeps:
        unused = create_client("http://wechat.invalid", retries=0)
        return IdentityDeps(
            settings=rt.settings, db=rt.db, wechat=WeChatClient(unused, apps), apps=apps, vault=make_vault(settings)
        )

    app = create_service_app(settings, routers=IDENTITY_ROUTERS, make_deps=make_deps)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    stack.append(lifespan)
    return app


@pytest.fixture
async def commerce(databases: dict[str, str], amqp: object) -> AsyncIterator[Commerce]:
    await truncate("commerce")
    await truncate("identity")
    # The periodic jobs are run by the tests themselves (``*_once``). Settings with an env alias
    # take it as the keyword.
    settings = load_settings(
        CommerceSettings,
        COMMERCE_RECONCILE_INTERVAL_SECONDS=0,
        COMMERCE_HOUSEKEEPING_INTERVAL_SECONDS=0,
        relay_in_process=True,
    )
    assert settings.reconcile_interval_seconds == 0 and settings.housekeeping_interval_seconds == 0
    sandbox = ShopSandbox(settings.wechat_apps)
    stack: list[Any] = []
    identity_app = await _identity_app(stack)
    identity_http = _internal_client(identity_app, "http://identity.test")
    clock = Clock()
    built: list[CommerceDeps] = []

    async def make_deps(rt: Runtime[CommerceSettings]) -> CommerceDeps:
        identity = IdentityClient(_internal_client(identity_app, "http://identity.test"))
        deps = CommerceDeps(
            settings=rt.settings, db=rt.db, wechat=sandbox.wechat_client(), identity=identity, clock=clock
        )
        built.append(deps)
        return deps

    app = create_app(settings, deps=make_deps)
    try:
        async with app.router.lifespan_context(app):
            api = _internal_client(app, "http://commerce.test")
            try:
                yield Commerce(api, built[0], sandbox, identity_http, clock, app.state.consumer)
            finally:
                await api.aclose()
    finally:
        await identity_http.aclose()
        for lifespan in reversed(stack):
            await lifespan.__aexit__(None, None, None)
        await sandbox.aclose()


__all__ = ["MP", "SHOP", "Clock", "Commerce", "ShopSandbox", "commerce", "shop_envelope"]
