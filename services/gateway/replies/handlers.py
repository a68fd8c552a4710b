"""notify published its reply rules: keep the newest set for every replica to load."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateway.replies.repository import ReplyRulesRepository
from shared.bus.consumer import EventContext
from shared.events import ReplyRulesPublished
from shared.observability import get_logger

if TYPE_CHECKING:
    from services.gateway.deps import GatewayDeps

log = get_logger(__name__)


async def on_reply_rules_published(event: ReplyRulesPublished, ctx: EventContext[GatewayDeps]) -> None:
    kept = await ReplyRulesRepository(ctx.uow.conn).store(
        event.version, event.rules.model_dump(mode="json"), event.published_at
    )
    # Every replica (this one too) loads it on its next version check (GATEWAY_REPLY_RULES_REFRESH_SECONDS).
    log.info("replies.rules_received", version=event.version, kept=kept)
