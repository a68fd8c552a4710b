"""notify's dependencies, built once at start; endpoints take ``Deps``, handlers ``ctx.deps``, jobs ``deps``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import httpx
from fastapi import Depends

from services.notify.limits.service import Caps, QuietHours
from services.notify.replies.service import PointsLookup
from services.notify.replies.service import load_rules as load_reply_rules
from services.notify.rules.service import RulesFile, check_rules, load_rules
from services.notify.settings import NotifySettings
from services.notify.templates.service import TemplateLibrary, TemplateSlot, load_library
from shared.app import Runtime, get_deps
from shared.db import Database, is_transient
from shared.http import create_client
from shared.observability import get_logger
from shared.replies import ReplyRuleSet
from shared.wechat.apps import AppKind
from shared.wechat.client import WeChatClient

log = get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class NotifyDeps:
    settings: NotifySettings
    db: Database
    # Sends are retried by the senders on their own schedule (a durable backoff), so the client tries once.
    wechat: WeChatClient
    wechat_http: httpx.AsyncClient
    reply_rules: ReplyRuleSet
    points: PointsLookup
    rules: RulesFile
    templates: TemplateSlot
    quiet: QuietHours
    caps: Caps
    identity: httpx.AsyncClient
    commerce: httpx.AsyncClient
    clock: Clock
    oa_appid: str | None
    mp_appid: str | None

    @property
    def library(self) -> TemplateLibrary:
        """The checked template library; raises ``TemplatesUnavailable`` (transient) until it is in."""
        return self.templates.get()

    async def aclose(self) -> None:
        await self.wechat_http.aclose()
        await self.identity.aclose()
        await self.commerce.aclose()


def build_deps(
    settings: NotifySettings,
    db: Database,
    wechat_http: httpx.AsyncClient,
    library: TemplateLibrary | None,
    *,
    clock: Clock = utc_now,
    identity: httpx.AsyncClient | None = None,
    commerce: httpx.AsyncClient | None = None,
) -> NotifyDeps:
    rules = load_rules(settings.message_rules_file)
    templates = TemplateSlot()
    if library is not None:
        check_rules(rules, library)  # a rules file that does not fit WeChat's library stops the start
        templates.set(library)
    apps = settings.wechat_apps
    token = settings.internal_token_value
    commerce = commerce or create_client(
        settings.commerce_url,
        internal_token=token,
        timeout=settings.commerce_timeout_seconds,
        retries=1,
        max_connections=16,
    )
    return NotifyDeps(
        settings=settings,
        db=db,
        wechat=WeChatClient(wechat_http, settings.wechat_apps, max_attempts=1),
        wechat_http=wechat_http,
        reply_rules=load_reply_rules(settings.reply_rules_file),
        points=PointsLookup(commerce, timeout=settings.commerce_timeout_seconds),
        rules=rules,
        templates=templates,
        quiet=QuietHours.parse(settings.quiet_hours),
        caps=Caps(settings.marketing_cap_day, settings.marketing_cap_week),
        identity=identity or create_client(settings.identity_url, internal_token=token),
        commerce=commerce,
        clock=clock,
        oa_appid=next((a.appid for a in apps.apps if a.kind is AppKind.OFFICIAL_ACCOUNT), None),
        mp_appid=next((a.appid for a in apps.apps if a.kind is AppKind.MINI_PROGRAM), None),
    )


async def make_deps(rt: Runtime[NotifySettings]) -> NotifyDeps:
    return await deps_factory()(rt)


def deps_factory(
    clock: Clock = utc_now,
    wechat_transport: httpx.AsyncBaseTransport | None = None,
    identity: httpx.AsyncClient | None = None,
    commerce: httpx.AsyncClient | None = None,
) -> Callable[[Runtime[NotifySettings]], Awaitable[NotifyDeps]]:
    """``make_deps`` for the app; tests inject a clock, WeChat's transport and the peer services."""

    async def make_deps(rt: Runtime[NotifySettings]) -> NotifyDeps:
        s = rt.settings
        load_rules(s.message_rules_file)  # a broken file fails before WeChat is asked anything
        library = await _library_at_start(s, wechat_transport)  # None: WeChat away, loaded later
        # A transport is closed with its client: the sender's client gets its own when one was injected.
        http = create_client(s.wechat_api_base, timeout=10.0, retries=0, transport=wechat_transport)
        return build_deps(s, rt.db, http, library, clock=clock, identity=identity, commerce=commerce)

    return make_deps


async def _library_at_start(s: NotifySettings, transport: httpx.AsyncBaseTransport | None) -> TemplateLibrary | None:
    """The template library, or None when WeChat does not answer within ``NOTIFY_TEMPLATES_WAIT_SECONDS``.

    WeChat (the sandbox under ``make run``) may still be starting, or away: notify starts anyway and
    :func:`services.notify.templates.jobs.templates_forever` loads it later; until then events wait.
    """
    deadline = asyncio.get_running_loop().time() + s.templates_wait_seconds
    async with create_client(s.wechat_api_base, retries=0, transport=transport) as http:
        while True:
            try:
                return await load_library(WeChatClient(http, s.wechat_apps), s.wechat_apps)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("templates.unavailable_at_start", error=repr(exc))
                    return None
                await asyncio.sleep(0.5)


Deps = Annotated[NotifyDeps, Depends(get_deps)]
