"""Passive replies: the rules notify owns, what a reply that needs data says, and publishing the rules.

The rule file (``NOTIFY_REPLY_RULES_FILE``) is read at start and published as
``notify.reply_rules.published`` when its content changed since the last publication; the
gateway answers every fixed reply from its copy. What reaches notify is a reply that needs data:
the member's points, which commerce owns (``GET {commerce}/internal/members/by-openid/{appid}/
{openid}/points``). Asked by the gateway within its budget, notify answers with the real balance,
with the rule's fallback when commerce does not know the member, or with ``defer`` when commerce
cannot answer in time — then the gateway says "一会儿发给你" and the deferred event brings the
real answer here, to be sent as a customer-service message. A balance is never made up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx
import yaml
from pydantic import ValidationError

from services.notify.replies.repository import PublishedRulesRepository
from services.notify.replies.schemas import PointsBalance, Reply, ReplyAnswer
from shared.errors import ConfigurationError
from shared.events import ReplyRulesPublished
from shared.observability import get_logger
from shared.replies import Answer, ReplyAsk, ReplyRuleSet
from shared.uow import UnitOfWork

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

log = get_logger(__name__)

PUBLISH_RETRY_SECONDS = 5.0
REPUBLISH_SECONDS = 600.0


def load_rules(path: str | Path) -> ReplyRuleSet:
    p = Path(path)
    try:
        # forbid: a misspelt key in the file is an error, not a rule silently ignored.
        return ReplyRuleSet.model_validate(yaml.safe_load(p.read_text(encoding="utf-8")) or {}, extra="forbid")
    except FileNotFoundError:
        raise ConfigurationError(f"NOTIFY_REPLY_RULES_FILE: {p} does not exist") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"NOTIFY_REPLY_RULES_FILE: {p} is invalid: {exc}") from None


class DataUnavailable(Exception):
    """The service that owns a reply's data did not answer (down, slow, or not built yet)."""


class PointsLookup:
    """A member's points from commerce, by the openid the push came from."""

    def __init__(self, commerce: httpx.AsyncClient, *, timeout: float) -> None:
        self.commerce = commerce
        self.timeout = timeout

    async def balance(self, appid: str, openid: str) -> PointsBalance | None:
        """The balance, None when commerce knows no member with this openid; DataUnavailable otherwise."""
        path = f"/internal/members/by-openid/{quote(appid, safe='')}/{quote(openid, safe='')}/points"
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.commerce.get(path)
        except (TimeoutError, httpx.HTTPError) as exc:
            raise DataUnavailable(f"commerce did not answer: {exc!r}") from exc
        if response.status_code == 404 and _problem_slug(response) == "member-not-found":
            return None
        if response.status_code != 200:
            # A 404 without our problem type is a route commerce does not have (yet).
            raise DataUnavailable(f"commerce answered {response.status_code}")
        try:
            return PointsBalance.model_validate_json(response.content)
        except ValidationError as exc:
            raise DataUnavailable(f"commerce answered an unexpected body: {exc.errors()[0]['msg']}") from None


def _problem_slug(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")).rsplit("/", 1)[-1] if isinstance(body, dict) else ""


class ReplyService:
    def __init__(self, rules: ReplyRuleSet, points: PointsLookup) -> None:
        self.rules = rules
        self.points = points

    async def answer(self, appid: str, openid: str, ask: ReplyAsk) -> ReplyAnswer:
        """What the gateway answers now (it asks only when a rule needs data, but any ask is answered)."""
        rule = self.rules.answer_for(ask)
        if rule is None:
            return ReplyAnswer(reply=None)
        try:
            content = await self.content(appid, openid, rule)
        except DataUnavailable as exc:
            log.info("reply.defer", appid=appid, reason=str(exc))
            return ReplyAnswer(reply=None, defer=True)
        return ReplyAnswer(reply=Reply(content=content) if content else None)

    async def deferred_content(self, appid: str, openid: str, ask: ReplyAsk) -> str | None:
        """The reply the gateway promised, to send now; the rule's fallback when the data cannot be had."""
        rule = self.rules.answer_for(ask)
        if rule is None:
            return None
        try:
            return await self.content(appid, openid, rule)
        except DataUnavailable as exc:
            # Not held for the data: one missing service must not stop this consumer.
            log.warning("reply.data_unavailable", appid=appid, error=str(exc))
            return rule.fallback

    async def content(self, appid: str, openid: str, rule: Answer) -> str | None:
        if rule.is_static:
            return rule.reply
        balance = await self.points.balance(appid, openid)
        if balance is None:
            return rule.fallback
        return rule.render({"available": balance.available, "pending": balance.pending})


async def publish_rules(uow: UnitOfWork, rules: ReplyRuleSet) -> None:
    """Publish ``rules`` (the gateway ignores a version it already holds)."""
    version = rules.version
    published_at = await PublishedRulesRepository(uow.conn).publish(version, rules.model_dump(mode="json"))
    uow.publish(ReplyRulesPublished(version=version, published_at=published_at, rules=rules))
    log.info("replies.rules_published", version=version)


async def reply_rules_publisher(deps: NotifyDeps) -> None:
    """Publish the rule set at start and again every ``REPUBLISH_SECONDS``.

    Publishing at every start (not only when the file changed) and periodically means a gateway
    whose database is new, or which missed the event, has the rules within minutes without anyone
    touching the file; the gateway ignores a version it already holds.
    """
    while True:
        try:
            async with deps.db.unit_of_work() as uow:
                await publish_rules(uow, deps.reply_rules)
        except Exception as exc:
            log.warning("replies.publish_failed", error=repr(exc))
            await asyncio.sleep(PUBLISH_RETRY_SECONDS)
            continue
        await asyncio.sleep(REPUBLISH_SECONDS)
