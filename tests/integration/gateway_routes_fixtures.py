"""Harness for the gateway's commerce, notify and operator routes (``test_gateway_routes.py``).

Everything is real and in-process, on this run's PostgreSQL databases and RabbitMQ namespace:

* the **gateway** (its app factory, lifespan, consumer and relay), whose upstream clients reach
* **identity**, **commerce** and **notify** — each its real app with its lifespan (asyncpg pool,
  broker, consumer, outbox relay), behind ``httpx.ASGITransport``; and
* the **WeChat sandbox**, which every service calls for WeChat and which pushes its callbacks
  (shop orders, subscribe popups) to the gateway's real callback endpoint, so a shop order goes
  sandbox → gateway → broker → commerce exactly as in production.

Only the periodic jobs of identity and commerce are off (nothing here depends on them); notify's
sender and campaign fan-out run. The harness is shared by the module: each test makes its own
sandbox users (so its own members) and uses its own client address, so tests do not see each
other's data or rate-limit budgets.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.commerce.app import create_app as create_commerce
from services.commerce.deps import CommerceDeps
from services.commerce.identity_client import IdentityClient
from services.commerce.settings import CommerceSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.identity.app import ROUTERS as IDENTITY_ROUTERS
from services.identity.deps import IdentityDeps, make_vault
from services.identity.settings import IdentitySettings
from services.identity.subscriptions import SUBSCRIPTIONS as IDENTITY_SUBSCRIPTIONS
from services.manifests import CONSUMERS
from services.notify.app import create_app as create_notify
from services.notify.settings import NotifySettings
from shared.app import Runtime, create_service_app
from shared.bus.topology import Topology
from shared.http import INTERNAL_TOKEN_HEADER, create_client
from shared.settings import DEV_ADMIN_TOKEN, DEV_INTERNAL_TOKEN, load_settings
from shared.wechat.client import WeChatClient
from tests.conftest import AMQP, NAMESPACE, db_url, truncate
from tests.waiting import eventually
from tools.wechat_sandbox import create_app as create_sandbox

OA = "wx0000000000000001"
MP = "wx0000000000000002"
SHOP = "wx0000000000000003"
SANDBOX = "http://sandbox.test"
GATEWAY = "http://gateway.test"
URLS = {"identity": "http://identity.test", "commerce": "http://commerce.test", "notify": "http://notify.test"}
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
WRITES_PER_MINUTE = 10
BODY_CAP = 4096
_addresses = itertools.count(1)


def internal_client(app: FastAPI, base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url, headers={INTERNAL_TOKEN_HEADER: DEV_INTERNAL_TOKEN}
    )


@dataclass
class Member:
    user: dict[str, Any]  # the sandbox user
    member_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Siyu:
    gateway: FastAPI
    sandbox: httpx.AsyncClient
    identity: httpx.AsyncClient
    commerce: httpx.AsyncClient
    notify: httpx.AsyncClient
    settings: GatewaySettings
    apps: dict[str, FastAPI]  # identity, commerce, notify: for a second gateway in front of them
    exit: AsyncExitStack
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        """A mini-program (or operator) client with an address of its own: its own IP budget."""
        n = next(_addresses)
        transport = httpx.ASGITransport(app=self.gateway, client=(f"203.0.{n // 250}.{n % 250 + 1}", 40000))
        client = httpx.AsyncClient(transport=transport, base_url=GATEWAY)
        self.clients.append(client)
        return client

    # --- WeChat, played by the sandbox ------------------------------------------------------------

    async def sandbox_post(self, path: str, body: Any = None) -> Any:
        r = await self.sandbox.post(path, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()

    async def member(self, api: httpx.AsyncClient) -> Member:
        """A new person in WeChat who opens the mini-program and signs in."""
        user = await self.sandbox_post("/sandbox/users", {"unionid_bound": True})
        code = (await self.sandbox_post(f"/sandbox/users/{user['user_id']}/login-code", {"appid": MP}))["code"]
        r = await api.post("/api/v1/sessions", json={"code": code})
        assert r.status_code == 201, r.text
        return Member(user, r.json()["member_id"], r.json()["token"])

    async def sku(self, price_fen: int) -> dict[str, Any]:
        for product in await self.sandbox_get("/sandbox/shop/products"):
            for sku in product["skus"]:
                if sku["sale_price"] == price_fen:
                    return {"product_id": product["product_id"], "sku_id": sku["sku_id"]}
        raise AssertionError(f"no SKU at {price_fen} fen in the sandbox catalog")

    async def sandbox_get(self, path: str) -> Any:
        r = await self.sandbox.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    async def order(self, member: Member, price_fen: int = 12800, *, gift: bool = False) -> dict[str, Any]:
        """The member buys one item in the shop (the sandbox pushes the new order to the gateway)."""
        sku = await self.sku(price_fen)
        body: dict[str, Any] = {"user_id": member.user["user_id"], "items": [{**sku, "count": 1}]}
        if gift:
            body["gift"] = True
        answer: dict[str, Any] = await self.sandbox_post("/sandbox/shop/orders", body)
        return answer

    async def act(self, order_id: str, *actions: str) -> None:
        for action in actions:
            answer = await self.sandbox_post(f"/sandbox/shop/orders/{order_id}/{action}", {})
            assert all(p["status"] == 200 for p in answer["push"]), answer

    async def points(self, api: httpx.AsyncClient, member: Member) -> dict[str, Any]:
        r = await api.get("/api/v1/me", headers=member.auth)
        assert r.status_code == 200, r.text
        points: dict[str, Any] = r.json()["points"]
        return points

    async def commerce_view(self, member: Member, what: str = "points") -> Any:
        """commerce's own answer (``points``, ``points/ledger``, ``gifts``...): what waits poll, so
        that waiting never spends the member's rate limit at the gateway."""
        r = await self.commerce.get(f"/internal/members/{member.member_id}/{what}")
        assert r.status_code == 200, r.text
        return r.json()

    async def earn(self, api: httpx.AsyncClient, member: Member, price_fen: int = 12800) -> str:
        """An own order paid, shipped, confirmed and settled: its points are available. The order id."""
        before = (await self.commerce_view(member))["points"]["available"]
        order_id = str((await self.order(member, price_fen))["order_id"])
        await self.act(order_id, "pay", "ship", "confirm", "settle")

        async def settled() -> bool:
            points = (await self.commerce_view(member))["points"]
            return bool(points["available"] == before + price_fen // 100 and points["pending"] == 0)

        await eventually(settled)
        return order_id

    async def check_in(self, api: httpx.AsyncClient, member: Member) -> None:
        r = await api.post("/api/v1/checkins", headers=member.auth)
        assert r.status_code == 201, r.text

    async def reward(self, *, cost: int, stock: int, kind: str = "coupon") -> str:
        """A reward added to the points mall (commerce's operator route)."""
        reward_id = f"rw-{uuid.uuid4().hex[:12]}"
        body: dict[str, Any] = {"reward_id": reward_id, "title": "满50减10", "kind": kind, "cost_points": cost}
        body["stock"] = stock
        if kind == "coupon":
            body["coupon"] = {"discount_fen": 1000, "min_spend_fen": 5000, "validity_days": 30}
        r = await self.commerce.post("/internal/admin/rewards", json=body)
        assert r.status_code == 201, r.text
        return reward_id


async def sql(service: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url(service))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _purge_queues() -> None:
    """Messages other modules of this run left on the queues are not this harness's to handle."""
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        topology = Topology(namespace=NAMESPACE)
        for consumer, types in CONSUMERS.items():
            queue = await topology.declare_consumer(channel, consumer, types)
            await queue.purge()
            await (await channel.get_queue(topology.dlq(consumer))).purge()


def gateway_settings(**overrides: Any) -> GatewaySettings:
    return load_settings(
        GatewaySettings,
        **{
            "GATEWAY_IDENTITY_URL": URLS["identity"],
            "GATEWAY_COMMERCE_URL": URLS["commerce"],
            "GATEWAY_NOTIFY_URL": URLS["notify"],
            "GATEWAY_RATE_WRITES_PER_MINUTE": WRITES_PER_MINUTE,
            "GATEWAY_API_MAX_BODY_BYTES": BODY_CAP,
            "GATEWAY_REPLY_RULES_REFRESH_SECONDS": 0.5,
            **overrides,
        },
    )


async def start_siyu() -> Siyu:
    for service in ("gateway", "identity", "commerce", "notify"):
        await truncate(service)
    await _purge_queues()
    stack = AsyncExitStack()
    try:
        return await _start(stack)
    except BaseException:
        await stack.aclose()
        raise


async def _start(stack: AsyncExitStack) -> Siyu:
    settings = gateway_settings()
    apps = settings.wechat_apps
    # The sandbox pushes to the gateway, which is built last (it needs the other apps): the
    # sandbox's transport is pointed at it once it exists.
    to_gateway = _ToGateway()
    sandbox_app = create_sandbox(apps, GATEWAY, seed=uuid.uuid4().int % 10**6, transport=to_gateway)
    stack.push_async_callback(sandbox_app.state.pusher.aclose)

    def wechat() -> WeChatClient:
        return WeChatClient(create_client(SANDBOX, retries=0, transport=httpx.ASGITransport(app=sandbox_app)), apps)

    # identity: its routers and consumer (follows), WeChat through the sandbox; no periodic jobs.
    identity_settings = load_settings(IdentitySettings)

    async def identity_deps(rt: Runtime[IdentitySettings]) -> IdentityDeps:
        return IdentityDeps(
            settings=rt.settings, db=rt.db, wechat=wechat(), apps=apps, vault=make_vault(identity_settings)
        )

    identity_app = create_service_app(
        identity_settings, routers=IDENTITY_ROUTERS, make_deps=identity_deps, subscriptions=IDENTITY_SUBSCRIPTIONS
    )
    await stack.enter_async_context(identity_app.router.lifespan_context(identity_app))

    # commerce: the real app; its reconcile and housekeeping are off (the tests drive the shop).
    commerce_settings = load_settings(
        CommerceSettings, COMMERCE_RECONCILE_INTERVAL_SECONDS=0, COMMERCE_HOUSEKEEPING_INTERVAL_SECONDS=0
    )

    async def commerce_deps(rt: Runtime[CommerceSettings]) -> CommerceDeps:
        identity = IdentityClient(internal_client(identity_app, URLS["identity"]))
        return CommerceDeps(settings=rt.settings, db=rt.db, wechat=wechat(), identity=identity)

    commerce_app = create_commerce(commerce_settings, deps=commerce_deps)
    await stack.enter_async_context(commerce_app.router.lifespan_context(commerce_app))

    # notify: the real app with its sender and campaign fan-out; WeChat is the sandbox.
    notify_settings = load_settings(
        NotifySettings,
        wechat_api_base=SANDBOX,
        **{
            "NOTIFY_SENDER_POLL_SECONDS": 0.02,
            "NOTIFY_JOBS_POLL_SECONDS": 0.1,
            "NOTIFY_SEND_BACKOFF_SECONDS": 0.05,
            "NOTIFY_SEND_MAX_ATTEMPTS": 2,
            "SIYU_QUIET_HOURS": "",
        },
    )
    notify_identity = await stack.enter_async_context(internal_client(identity_app, URLS["identity"]))
    notify_commerce = await stack.enter_async_context(internal_client(commerce_app, URLS["commerce"]))
    notify_app = create_notify(
        notify_settings,
        wechat_transport=httpx.ASGITransport(app=sandbox_app),
        identity=notify_identity,
        commerce=notify_commerce,
    )
    await stack.enter_async_context(notify_app.router.lifespan_context(notify_app))

    gateway_app = to_gateway.app = create_gateway(
        settings,
        upstream_transports={
            "identity": httpx.ASGITransport(app=identity_app),
            "commerce": httpx.ASGITransport(app=commerce_app),
            "notify": httpx.ASGITransport(app=notify_app),
        },
    )
    await stack.enter_async_context(gateway_app.router.lifespan_context(gateway_app))

    siyu = Siyu(
        gateway=gateway_app,
        sandbox=await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox_app), base_url=SANDBOX)
        ),
        identity=await stack.enter_async_context(internal_client(identity_app, URLS["identity"])),
        commerce=await stack.enter_async_context(internal_client(commerce_app, URLS["commerce"])),
        notify=await stack.enter_async_context(internal_client(notify_app, URLS["notify"])),
        settings=settings,
        apps={"identity": identity_app, "commerce": commerce_app, "notify": notify_app},
        exit=stack,
    )

    async def close_clients() -> None:
        for client in siyu.clients:
            await client.aclose()

    stack.push_async_callback(close_clients)
    return siyu


class _ToGateway(httpx.AsyncBaseTransport):
    """The sandbox's pushes, delivered to the gateway app in-process."""

    app: FastAPI | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self.app is not None, "the gateway is not built yet"
        return await httpx.ASGITransport(app=self.app).handle_async_request(request)


@pytest.fixture(scope="module")
async def siyu(databases: dict[str, str], amqp: object) -> AsyncIterator[Siyu]:
    running = await start_siyu()
    try:
        yield running
    finally:
        await running.exit.aclose()


@pytest.fixture
async def api(siyu: Siyu) -> httpx.AsyncClient:
    return siyu.client()
