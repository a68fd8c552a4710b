"""Passive replies, decided in the gateway from its copy of notify's rules.

notify owns the rules and publishes them (``notify.reply_rules.published``); the gateway's
consumer keeps the newest set in ``reply_rules`` and every replica holds it in memory, checking
its version every ``GATEWAY_REPLY_RULES_REFRESH_SECONDS``. So a keyword, a follow scene's welcome
or a menu key is answered from memory, with no call to anyone.

A rule whose answer needs data another service owns (the member's points, commerce's) is asked of
notify (``POST /internal/replies``) within ``GATEWAY_REPLY_BUDGET_SECONDS`` (WeChat waits 5 s).
When notify cannot answer in time — the budget runs out, it is down, or it says the data is not
there yet (``defer``) — the push is answered with the rule's short ``pending`` text and a
``gateway.reply.deferred`` event, and notify sends the real answer as a customer-service message.
The pending text is only said when that event was recorded; a made-up value is never said.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter

from services.gateway.replies.repository import ReplyRulesRepository
from services.gateway.replies.schemas import NotifyAnswer
from services.gateway.upstreams import Upstreams, parse
from shared.db import Database
from shared.errors import SiyuError
from shared.events import ReplyDeferred
from shared.observability import get_logger
from shared.periodic import run_every
from shared.replies import Answer, ReplyAsk, ReplyRuleSet
from shared.wechat.codec import render_xml
from shared.wechat.crypto import MessageCrypto
from shared.wechat.push import ClickEvent, Push, ScanEvent, SubscribeEvent, TextMessage

if TYPE_CHECKING:
    from services.gateway.deps import GatewayDeps

log = get_logger(__name__)

REPLIES = Counter("siyu_gateway_passive_replies_total", "Passive reply outcomes", ["outcome"])


def reply_ask(push: Push) -> ReplyAsk | None:
    """What this push asks of the rules, or None when it never gets a passive reply."""
    if isinstance(push, TextMessage):
        return ReplyAsk(trigger="text", text=push.content[:2048])
    if isinstance(push, SubscribeEvent):
        return ReplyAsk(trigger="subscribe", scene=push.scene[:128] if push.scene else None)
    if isinstance(push, ScanEvent):
        return ReplyAsk(trigger="scan", scene=push.scene[:128] if push.scene else None)
    if isinstance(push, ClickEvent):
        return ReplyAsk(trigger="click", key=push.key[:128] or None)
    return None


class ReplyRulesCopy:
    """This replica's copy of the current rule set (empty until notify has published one)."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.rules = ReplyRuleSet()

    async def refresh(self, db: Database) -> bool:
        """Reload when the stored version differs from ours (one indexed read otherwise); True when reloaded."""
        async with db.connection() as conn:
            repository = ReplyRulesRepository(conn)
            if await repository.version() == self.version:
                return False
            loaded = await repository.load()
        if loaded is None:
            return False
        version, rules = loaded
        # Stored by our own consumer from a validated event; parse tolerantly all the same.
        self.rules, self.version = ReplyRuleSet.model_validate(rules), version
        log.info("replies.rules_loaded", version=version)
        return True


class ReplyService:
    def __init__(self, copy: ReplyRulesCopy, upstreams: Upstreams, db: Database, *, budget: float) -> None:
        self.copy = copy
        self.upstreams = upstreams
        self.db = db
        self.budget = budget

    async def reply_for(self, appid: str, push: Push, push_id: int) -> str | None:
        """The text to answer ``push`` with now, or None for ``success``."""
        ask = reply_ask(push)
        if ask is None:
            return None
        rules = self.copy.rules
        answer = rules.answer_for(ask)
        if answer is None:
            REPLIES.labels("none").inc()
            return None
        if answer.is_static:
            REPLIES.labels("static").inc()
            return answer.reply
        return await self._ask_notify(appid, push, push_id, ask, rules, answer)

    async def _ask_notify(
        self, appid: str, push: Push, push_id: int, ask: ReplyAsk, rules: ReplyRuleSet, answer: Answer
    ) -> str | None:
        request = {"appid": appid, "openid": push.from_user_name, **ask.model_dump(exclude_none=True)}
        try:
            async with asyncio.timeout(self.budget):
                response = await self.upstreams.request(
                    "notify", "POST", "/internal/replies", json_body=request, retry_safe=True
                )
            told = parse(NotifyAnswer, response, "notify")
        except (TimeoutError, SiyuError) as exc:  # out of time, notify down or answering nonsense
            return await self._defer(appid, push, push_id, ask, rules, answer, reason=exc.__class__.__name__)
        if told.reply is not None:
            REPLIES.labels("dynamic").inc()
            return told.reply.content
        if told.defer:
            return await self._defer(appid, push, push_id, ask, rules, answer, reason="notify deferred")
        REPLIES.labels("none").inc()
        return None

    async def _defer(
        self, appid: str, push: Push, push_id: int, ask: ReplyAsk, rules: ReplyRuleSet, answer: Answer, *, reason: str
    ) -> str | None:
        event = ReplyDeferred(
            appid=appid,
            openid=push.from_user_name,
            push_id=push_id,
            trigger=ask.trigger,
            text=ask.text,
            scene=ask.scene,
            key=ask.key,
            reason=reason,
        )
        try:
            async with self.db.unit_of_work() as uow:
                uow.publish(event)
        except Exception as exc:
            # Nobody will send the real answer: do not promise it. The push itself is stored.
            REPLIES.labels("lost").inc()
            log.error("reply.defer_failed", error=repr(exc), push_id=push_id)
            return answer.fallback
        REPLIES.labels("deferred").inc()
        log.info("reply.deferred", push_id=push_id, reason=reason)
        return rules.pending_text(answer)


def render_reply(
    push: Push, content: str, crypto: MessageCrypto | None, *, encrypted: bool, key_index: int
) -> str:
    """The passive reply's XML, encrypted with the key that decrypted the push when it was encrypted."""
    now = int(time.time())
    xml = render_xml(
        {
            "ToUserName": push.from_user_name,
            "FromUserName": push.to_user_name,
            "CreateTime": now,
            "MsgType": "text",
            "Content": content,
        }
    )
    if not encrypted or crypto is None:
        return xml
    nonce = str(secrets.randbelow(10**10))
    return crypto.encrypt_reply_xml(xml, str(now), nonce, key_index=key_index)


async def reply_rules_refresher(deps: GatewayDeps) -> None:
    """Keep this replica's copy current: a version check every GATEWAY_REPLY_RULES_REFRESH_SECONDS."""

    async def once() -> dict[str, int]:
        return {"reply_rules_loaded": int(await deps.reply_rules.refresh(deps.db))}

    await run_every(deps.settings.reply_rules_refresh_seconds, once, "replies.refreshed", wait_first=True)
