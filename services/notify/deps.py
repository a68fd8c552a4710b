"""notify's dependencies, built once at start; endpoints take ``Deps``, handlers ``ctx.deps``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends

from services.notify.replies.service import PointsLookup, load_rules
from services.notify.settings import NotifySettings
from shared.app import Runtime, get_deps
from shared.db import Database
from shared.http import create_client
from shared.replies import ReplyRuleSet
from shared.wechat.client import WeChatClient


@dataclass
class NotifyDeps:
    settings: NotifySettings
    db: Database
    wechat: WeChatClient
    reply_rules: ReplyRuleSet
    commerce: httpx.AsyncClient
    points: PointsLookup

    async def aclose(self) -> None:
        await self.wechat.aclose()
        await self.commerce.aclose()


async def make_deps(rt: Runtime[NotifySettings]) -> NotifyDeps:
    settings = rt.settings
    commerce = create_client(
        settings.commerce_url,
        internal_token=settings.internal_token_value,
        timeout=settings.commerce_timeout_seconds,
        retries=1,
        max_connections=16,
    )
    return NotifyDeps(
        settings=settings,
        db=rt.db,
        wechat=WeChatClient.create(settings.wechat_api_base, settings.wechat_apps),
        reply_rules=load_rules(settings.reply_rules_file),
        commerce=commerce,
        points=PointsLookup(commerce, timeout=settings.commerce_timeout_seconds),
    )


Deps = Annotated[NotifyDeps, Depends(get_deps)]
