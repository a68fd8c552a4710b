"""An in-process gateway (real PostgreSQL, real broker, its own relay) and a WeChat that signs like WeChat."""

from __future__ import annotations

import json
import time
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

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.settings import load_settings
from shared.wechat.codec import render_xml
from shared.wechat.crypto import MessageCrypto, sign
from tests.conftest import db_url
from tests.waiting import eventually

OA = "wx0000000000000001"
MP = "wx0000000000000002"
SHOP = "wx0000000000000003"
OLD_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"


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
    client: httpx.AsyncClient
    wechat: WeChat
    settings: GatewaySettings
    # notify's reply endpoint, faked (it is another process); by default it has nothing to say.
    replies: respx.Route
    upstream: respx.MockRouter  # every other internal service call; unmocked ones fail

    async def push(self, appid: str, query: dict[str, str], body: bytes, **kw: Any) -> httpx.Response:
        return await self.client.post(f"/wechat/callbacks/{appid}", params=query, content=body, **kw)


async def db_count(sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(db_url("gateway"))
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def written() -> dict[str, int]:
    """Everything the gateway can write for a push."""
    return {t: await db_count(f"SELECT count(*) FROM {t}") for t in ("inbound_pushes", "push_nonces", "outbox")}


async def drain(queue: aio_pika.abc.AbstractQueue) -> list[dict[str, Any]]:
    """Every event the gateway has published since the last drain, from the probe queue.

    Waits until the gateway's outbox has no pending row. The relay marks a row sent only after the
    broker confirmed it, and the broker confirms only once the message is on every bound queue, so
    by then everything published is on the probe: no quiet period needed, nothing missed, and a
    row published twice shows up twice.
    """

    async def nothing_pending() -> bool:
        return await db_count("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0

    await eventually(nothing_pending, what="the gateway's outbox relayed")
    out: list[dict[str, Any]] = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        out.append(json.loads(message.body))
    return out


@pytest.fixture(scope="session")
def apps_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev apps, with a previous EncodingAESKey on the service account (a rotation in progress)."""
    src = Path(__file__).resolve().parents[2] / "deploy" / "dev" / "wechat-apps.yaml"
    data = yaml.safe_load(src.read_text())
    for app in data["apps"]:
        if app["appid"] == OA:
            app["previous_encoding_aes_key"] = OLD_KEY
    path = tmp_path_factory.mktemp("apps") / "wechat-apps.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
async def gateway(clean_databases: dict[str, str], amqp: Any, apps_file: Path) -> AsyncIterator[Gateway]:
    settings = load_settings(GatewaySettings, wechat_apps_file=str(apps_file))
    app = create_app(settings)
    apps = {a["appid"]: a for a in yaml.safe_load(apps_file.read_text())["apps"]}
    with respx.mock(assert_all_called=False) as mock:
        replies = mock.post(f"{settings.notify_url}/internal/replies").respond(json={"reply": None})
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
                yield Gateway(client, WeChat(apps), settings, replies, mock)
