"""An in-process gateway (real PostgreSQL, real broker, its own relay and consumer) and a WeChat
that signs like WeChat."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import respx
import yaml
from fastapi import FastAPI

from services.gateway.app import create_app
from services.gateway.deps import GatewayDeps
from services.gateway.replies.repository import ReplyRulesRepository
from services.gateway.settings import GatewaySettings
from services.notify.replies.service import load_rules
from shared.bus.topology import Topology, amqp_message
from shared.events import Envelope, ReplyRulesPublished
from shared.replies import ReplyRuleSet
from shared.settings import load_settings
from shared.wechat.codec import render_xml
from shared.wechat.crypto import MessageCrypto, sign
from tests.conftest import NAMESPACE, ROOT, db_url
from tests.waiting import eventually

OA = "wx0000000000000001"
MP = "wx0000000000000002"
SHOP = "wx0000000000000003"
OLD_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"
DEV_RULES = ROOT / "deploy" / "dev" / "reply-rules.yaml"


@dataclass
class WeChat:
    """Builds pushes the way WeChat's servers do, for the apps in the test apps file."""

    apps: dict[str, dict[str, Any]]

    def crypto(self, appid: str, *, key: str | None = None) -> MessageCrypto:
        a = self.apps[appid]
        return MessageCrypto(a["token"], key or a["encoding_aes_key"], appid)

    def query(self, appid: str, *, ts: str | None = None, nonce: str = "123456", **extra: str) -> dict[str, str]:
        ts = ts or str(int(time.time()))
        return {"signature": sign(self.apps[appid]["token"], ts, nonce), "timestamp": ts, "nonce": nonce, **extra}

    def plain(self, appid: str, payload: dict[str, Any], **q: str) -> tuple[dict[str, str], bytes]:
        return self.query(appid, **q), render_xml(payload).encode()

    def safe(
        self, appid: str, payload: dict[str, Any] | str, *, json_body: bool = False, key: str | None = None, **q: str
    ) -> tuple[dict[str, str], bytes]:
        query = self.query(appid, **q)
        if isinstance(payload, str):
            inner = payload.encode()
        else:
            inner = json.dumps(payload).encode() if json_body else render_xml(payload).encode()
        body, msg_signature = self.crypto(appid, key=key).encrypt_push(
            inner, query["timestamp"], query["nonce"], to_user=self.apps[appid]["original_id"], json_body=json_body
        )
        return {**query, "encrypt_type": "aes", "msg_signature": msg_signature}, body

    def open_reply(self, appid: str, xml: str, *, key: str | None = None) -> dict[str, Any]:
        """A passive reply as WeChat reads it: check its signature, decrypt, parse."""
        import xmltodict

        env = xmltodict.parse(xml)["xml"]
        app = self.apps[appid]
        assert env["MsgSignature"] == sign(app["token"], env["TimeStamp"], env["Nonce"], env["Encrypt"])
        plain = self.crypto(appid, key=key).decrypt(env["Encrypt"]).plaintext
        reply: dict[str, Any] = xmltodict.parse(plain)["xml"]
        return reply


def text_message(
    openid: str, content: str, msg_id: str = "7300000000000000001", t: int | None = None
) -> dict[str, Any]:
    return {
        "ToUserName": "gh_000000000001",
        "FromUserName": openid,
        "CreateTime": t or int(time.time()),
        "MsgType": "text",
        "Content": content,
        "MsgId": msg_id,
    }


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    wechat: WeChat
    settings: GatewaySettings
    # notify's reply endpoint, faked (it is another process); by default it has nothing to say.
    replies: respx.Route
    upstream: respx.MockRouter  # every other internal service call; unmocked ones fail

    @property
    def deps(self) -> GatewayDeps:
        deps: GatewayDeps = self.app.state.deps
        return deps

    async def push(self, appid: str, query: dict[str, str], body: bytes, **kw: Any) -> httpx.Response:
        return await self.client.post(f"/wechat/callbacks/{appid}", params=query, content=body, **kw)

    async def install_rules(self, rules: ReplyRuleSet) -> None:
        """Store a rule set as the consumer would and load it into this replica's copy at once."""
        async with self.deps.db.connection() as conn:
            await ReplyRulesRepository(conn).store(rules.version, rules.model_dump(mode="json"), datetime.now(UTC))
        await self.deps.reply_rules.refresh(self.deps.db)
        assert self.deps.reply_rules.version == rules.version


async def db_count(sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(db_url("gateway"))
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def written() -> dict[str, int]:
    """Everything the gateway can write for a push."""
    return {t: await db_count(f"SELECT count(*) FROM {t}") for t in ("inbound_pushes", "push_nonces", "outbox")}


async def drain(queue: aio_pika.abc.AbstractQueue, service: str = "gateway") -> list[dict[str, Any]]:
    """Every event ``service`` has published since the last drain, from the probe queue.

    Waits until its outbox has no pending row. The relay marks a row sent only after the
    broker confirmed it, and the broker confirms only once the message is on every bound queue, so
    by then everything published is on the probe: no quiet period needed, nothing missed, and a
    row published twice shows up twice.
    """

    async def nothing_pending() -> bool:
        conn = await asyncpg.connect(db_url(service))
        try:
            return await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0
        finally:
            await conn.close()

    await eventually(nothing_pending, what=f"{service}'s outbox relayed")
    out: list[dict[str, Any]] = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        out.append(json.loads(message.body))
    return out


async def publish_rules(
    amqp: aio_pika.abc.AbstractRobustConnection, rules: ReplyRuleSet, *, published_at: datetime | None = None
) -> Envelope:
    """notify's ``notify.reply_rules.published``, put on the exchange as the relay would."""
    event = ReplyRulesPublished(version=rules.version, published_at=published_at or datetime.now(UTC), rules=rules)
    envelope = Envelope.wrap(event, producer="notify")
    channel = await amqp.channel(publisher_confirms=True)
    try:
        exchange = await Topology(namespace=NAMESPACE).declare_exchanges(channel)
        await exchange.publish(
            amqp_message(envelope.event_id, envelope.type, envelope.model_dump_json().encode(), {}),
            routing_key=envelope.type,
        )
    finally:
        await channel.close()
    return envelope


def dev_rules() -> ReplyRuleSet:
    return load_rules(DEV_RULES)


def gateway_settings(apps_file: Path, **overrides: Any) -> GatewaySettings:
    return load_settings(
        GatewaySettings,
        wechat_apps_file=str(apps_file),
        **{"GATEWAY_REPLY_RULES_REFRESH_SECONDS": 0.1, **overrides},
    )


@pytest.fixture(scope="session")
def apps_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev apps, with a previous EncodingAESKey on the service account (a rotation in progress)."""
    src = ROOT / "deploy" / "dev" / "wechat-apps.yaml"
    data = yaml.safe_load(src.read_text())
    for app in data["apps"]:
        if app["appid"] == OA:
            app["previous_encoding_aes_key"] = OLD_KEY
    path = tmp_path_factory.mktemp("apps") / "wechat-apps.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
async def gateway(clean_databases: dict[str, str], amqp: Any, apps_file: Path) -> AsyncIterator[Gateway]:
    """A gateway serving the dev reply rules (as notify publishes them)."""
    settings = gateway_settings(apps_file)
    app = create_app(settings)
    apps = {a["appid"]: a for a in yaml.safe_load(apps_file.read_text())["apps"]}
    with respx.mock(assert_all_called=False) as mock:
        replies = mock.post(f"{settings.notify_url}/internal/replies").respond(json={"reply": None})
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
                gateway = Gateway(app, client, WeChat(apps), settings, replies, mock)
                await gateway.install_rules(dev_rules())
                yield gateway
