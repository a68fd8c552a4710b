"""Harness for identity's integration tests (``test_identity_*.py``).

Real PostgreSQL (this run's ``siyu_test_identity``, truncated per test), the WeChat sandbox
in-process, and identity itself in-process in two halves:

* its **internal API**: the real routers and dependencies with a lifespan (asyncpg pool, broker
  connection), but no consumer on the broker and no relay: nothing here should race another
  consumer of this run's queues for messages, and the outbox stays as the requests left it;
* its **consumer**: a real :class:`InboxConsumer` over identity's subscription manifest, fed
  message bodies through ``handle`` — the same code path as a broker delivery, inbox included.

Events identity publishes are read back from its ``outbox`` table.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.identity.app import ROUTERS
from services.identity.deps import IdentityDeps, make_vault
from services.identity.settings import IdentitySettings
from services.identity.subscriptions import SUBSCRIPTIONS
from shared.app import Runtime, create_service_app
from shared.bus.consumer import InboxConsumer
from shared.bus.topology import Topology
from shared.db import Database
from shared.events import WeChatPushReceived
from shared.events.envelope import Envelope
from shared.http import create_client
from shared.settings import DEV_INTERNAL_TOKEN, load_settings
from shared.wechat.apps import AppKind, WeChatApps
from shared.wechat.client import WeChatClient
from tests.conftest import NAMESPACE, db_url, truncate
from tools.wechat_sandbox import create_app as create_sandbox

OA = "wx0000000000000001"
MP = "wx0000000000000002"
SHOP = "wx0000000000000003"
SANDBOX = "http://sandbox.test"


class Sandbox:
    """The in-process WeChat sandbox; pushes go nowhere (tests build the gateway's events themselves)."""

    def __init__(self, apps: WeChatApps) -> None:
        sink = httpx.MockTransport(lambda _: httpx.Response(200, text="success"))
        # WeChat stamps pushes with whole seconds; each follow action here moves the clock on by one.
        self.now = float(int(time.time()))
        self.app = create_sandbox(
            apps, "http://gateway.invalid", seed=uuid.uuid4().int % 10**6, clock=lambda: self.now, transport=sink
        )
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=SANDBOX)

    def wechat_client(self, apps: WeChatApps) -> WeChatClient:
        http = create_client(SANDBOX, retries=0, transport=httpx.ASGITransport(app=self.app))
        return WeChatClient(http, apps, backoff=0.001)

    async def post(self, path: str, body: Any = None) -> Any:
        r = await self.http.post(path, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()

    async def user(self, **body: Any) -> dict[str, Any]:
        return await self.post("/sandbox/users", body)  # type: ignore[no-any-return]

    async def login_code(self, user: dict[str, Any], appid: str = MP) -> str:
        return str((await self.post(f"/sandbox/users/{user['user_id']}/login-code", {"appid": appid}))["code"])

    async def phone_code(self, user: dict[str, Any], appid: str = MP) -> str:
        return str((await self.post(f"/sandbox/users/{user['user_id']}/phone-code", {"appid": appid}))["code"])

    async def bind_unionid(self, user: dict[str, Any]) -> None:
        await self.post(f"/sandbox/users/{user['user_id']}/bind-unionid", {})

    async def follow(self, user: dict[str, Any], scene: str | None = None, appid: str = OA) -> Envelope:
        """Follow (or SCAN when already following) in the sandbox; the event the gateway would publish."""
        self.now += 1
        await self.post(f"/sandbox/users/{user['user_id']}/follow", {"appid": appid, "scene": scene})
        return self._event_of_last_push(user, appid)

    async def unfollow(self, user: dict[str, Any], appid: str = OA) -> Envelope:
        self.now += 1
        await self.post(f"/sandbox/users/{user['user_id']}/unfollow", {"appid": appid})
        return self._event_of_last_push(user, appid)

    def _event_of_last_push(self, user: dict[str, Any], appid: str) -> Envelope:
        openid = user["openids"][appid]
        push = [p for p in self.app.state.sandbox.pushes if p["appid"] == appid and p["FromUserName"] == openid][-1]
        payload = {
            "ToUserName": "gh_000000000001",
            "FromUserName": openid,
            "CreateTime": str(push["CreateTime"]),
            "MsgType": "event",
            "Event": push["Event"],
        }
        if push.get("EventKey"):
            payload["EventKey"] = push["EventKey"]
            payload["Ticket"] = "gQ-test-ticket"
        return oa_event(payload)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.app.state.pusher.aclose()


def oa_event(payload: dict[str, Any], appid: str = OA) -> Envelope:
    """The envelope the gateway publishes for an official-account event push."""
    name = str(payload["Event"]).lower()
    data = WeChatPushReceived(
        appid=appid,
        app_kind="oa",
        name=name,
        openid=payload["FromUserName"],
        create_time=int(payload["CreateTime"]),
        dedup_key=f"evt:{payload['FromUserName']}:{payload['CreateTime']}:{name}:{payload.get('EventKey', '')}",
        push_id=1,
        payload=payload,
    )
    return Envelope.wrap(data, producer="gateway", event_type=f"wechat.oa.{name}")


@dataclass
class Identity:
    """identity in-process: its API client, its consumer, and its database."""

    api: httpx.AsyncClient
    consumer: InboxConsumer[IdentityDeps]
    deps: IdentityDeps
    sandbox: Sandbox
    app: FastAPI

    async def deliver(self, envelope: Envelope) -> str:
        """One broker delivery of ``envelope`` to identity's consumer: ``handled`` or ``duplicate``."""
        return await self.consumer.handle(envelope.model_dump_json().encode())

    async def login(self, user: dict[str, Any], appid: str = MP) -> dict[str, Any]:
        code = await self.sandbox.login_code(user, appid)
        r = await self.api.post("/internal/logins", json={"appid": appid, "code": code})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def member(self, member_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/internal/members/{member_id}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def resolve(self, appid: str, openid: str) -> dict[str, Any] | None:
        r = await self.api.post("/internal/resolve", json={"appid": appid, "openid": openid})
        return r.json() if r.status_code == 200 else None

    @property
    def db(self) -> Database:
        return self.deps.db

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(db_url("identity"))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def count(self, query: str, *args: Any) -> int:
        return int((await self.sql(query, *args))[0][0])

    async def published(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Envelopes identity wrote to its outbox (oldest first)."""
        rows = await self.sql("SELECT type, body FROM outbox ORDER BY id")
        out = [json.loads(bytes(r["body"])) for r in rows]
        return [e for e in out if event_type is None or e["type"] == event_type]

    async def snapshot(self) -> dict[str, Any]:
        """Every identity table's rows (minus bookkeeping), to compare before and after a no-op."""
        tables = [
            "members",
            "app_identities",
            "wechat_user_tags",
            "wechat_sync_attempts",
            "follows",
            "follow_events",
            "phones",
            "profiles",
            "behaviour_events",
            "member_tags",
            "merges",
            "merge_blocks",
            "outbox",
        ]
        out: dict[str, Any] = {}
        for t in tables:
            rows = await self.sql(f'SELECT * FROM "{t}"')
            cleaned = []
            for r in rows:
                d = dict(r)
                for volatile in ("updated_at", "last_seen", "session_key_enc", "session_key_at", "received_at"):
                    d.pop(volatile, None)
                cleaned.append(d)
            out[t] = sorted(cleaned, key=repr)
        return out


@pytest.fixture
async def identity(databases: dict[str, str]) -> AsyncIterator[Identity]:
    await truncate("identity")
    settings = load_settings(IdentitySettings, relay_in_process=False, schedule_interval_seconds=0)
    apps = settings.wechat_apps
    sandbox = Sandbox(apps)
    built: list[IdentityDeps] = []

    async def make_deps(rt: Runtime[IdentitySettings]) -> IdentityDeps:
        deps = IdentityDeps(
            settings=rt.settings, db=rt.db, wechat=sandbox.wechat_client(apps), apps=apps, vault=make_vault(settings)
        )
        built.append(deps)
        return deps

    app = create_service_app(settings, routers=ROUTERS, make_deps=make_deps)
    async with app.router.lifespan_context(app):
        deps = built[0]
        consumer = InboxConsumer(
            "identity",
            deps.db,
            cast(Any, None),  # handle() never touches the broker
            Topology(namespace=NAMESPACE),
            SUBSCRIPTIONS,
            deps,
        )
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://identity.test",
            headers={"X-Siyu-Internal-Token": DEV_INTERNAL_TOKEN},
        )
        try:
            yield Identity(api, consumer, deps, sandbox, app)
        finally:
            await api.aclose()
            await sandbox.aclose()


__all__ = ["MP", "OA", "SHOP", "AppKind", "Identity", "Sandbox", "identity", "oa_event"]
