"""Passive replies: ask notify under a strict budget; on timeout, defer to a customer-service message.

The ack path waits on nothing else. WeChat gives 5 s; notify gets ``reply_budget_seconds`` (1.5 s
by default) and anything slower or failing is answered ``success`` and handed to notify as a
``gateway.reply.deferred`` event, which it sends through the customer-service API.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from prometheus_client import Counter

from services.gateway.callbacks.decode import DecodedPush
from services.gateway.clients import Upstreams
from services.gateway.settings import GatewaySettings
from shared.app import Runtime
from shared.db import transaction
from shared.events import ReplyDeferred
from shared.observability import get_logger
from shared.wechat.apps import AppKind, WeChatApp
from shared.wechat.codec import render_xml
from shared.wechat.crypto import MessageCrypto
from shared.wechat.push import ClickEvent, Push, ScanEvent, SubscribeEvent, TextMessage

log = get_logger(__name__)

REPLIES = Counter("siyu_gateway_passive_replies_total", "Passive reply outcomes", ["outcome"])


def reply_request(push: Push) -> dict[str, Any] | None:
    """What to ask notify, or None when this push never gets a passive reply."""
    if isinstance(push, TextMessage):
        return {"trigger": "text", "text": push.content[:2048]}
    if isinstance(push, SubscribeEvent):
        return {"trigger": "subscribe", "scene": push.scene}
    if isinstance(push, ScanEvent):
        return {"trigger": "scan", "scene": push.scene}
    if isinstance(push, ClickEvent):
        return {"trigger": "click", "key": push.key}
    return None


async def passive_reply(rt: Runtime, app: WeChatApp, push: Push, push_id: int, decoded: DecodedPush) -> str | None:
    """The reply body (XML, encrypted when the push was), or None to answer ``success``."""
    # Only service accounts take passive text replies; mini-program customer service answers by API.
    if app.kind is not AppKind.OFFICIAL_ACCOUNT or decoded.json_body:
        return None
    ask = reply_request(push)
    if ask is None:
        return None
    settings = rt.settings
    assert isinstance(settings, GatewaySettings)
    upstreams: Upstreams = rt.deps.upstreams
    request = {"appid": app.appid, "openid": push.from_user_name, **ask}
    try:
        async with asyncio.timeout(settings.reply_budget_seconds):
            response = await upstreams.request("notify", "POST", "/internal/replies", json_body=request)
        reply = response.json().get("reply")
    except Exception as exc:  # timeout, notify down, a bad answer: WeChat must not wait
        REPLIES.labels("deferred").inc()
        log.warning("reply.deferred", error=repr(exc), push_id=push_id)
        await _defer(rt, request, push_id, reason=exc.__class__.__name__)
        return None
    if not reply or not reply.get("content"):
        REPLIES.labels("none").inc()
        return None
    REPLIES.labels("replied").inc()
    now = int(time.time())
    xml = render_xml(
        {
            "ToUserName": push.from_user_name,
            "FromUserName": push.to_user_name,
            "CreateTime": now,
            "MsgType": "text",
            "Content": str(reply["content"]),
        }
    )
    if not decoded.encrypted:
        return xml
    nonce = str(secrets.randbelow(10**10))
    return MessageCrypto.for_app(app).encrypt_reply_xml(xml, str(now), nonce, key_index=decoded.key_index)


async def _defer(rt: Runtime, request: dict[str, Any], push_id: int, reason: str) -> None:
    try:
        async with transaction(rt.sessions) as session:
            await rt.outbox.add(session, ReplyDeferred(push_id=push_id, reason=reason, **request))
    except Exception as exc:  # the push itself is stored; losing the courtesy reply is logged, not fatal
        log.error("reply.defer_failed", error=repr(exc), push_id=push_id)
