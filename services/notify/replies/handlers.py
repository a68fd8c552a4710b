"""A reply the gateway could not give in time goes out as a customer-service message.

The content is worked out before the inbox transaction opens (``Prefetching``: it may ask
commerce), the decision is recorded as a pending delivery in the inbox transaction, and the
message is sent after that commit by the delivery sender (``services/notify/deliveries``).
"""

from __future__ import annotations

from services.notify.deliveries.repository import DeliveryRepository
from services.notify.deps import NotifyDeps
from services.notify.replies.service import ReplyService
from shared.bus.consumer import EventContext, Prefetching
from shared.events import ReplyDeferred
from shared.replies import ReplyAsk


def _ask(event: ReplyDeferred) -> ReplyAsk:
    return ReplyAsk.model_validate(
        {"trigger": event.trigger, "text": event.text, "scene": event.scene, "key": event.key}
    )


async def _content(event: ReplyDeferred, deps: NotifyDeps) -> str | None:
    return await ReplyService(deps.reply_rules, deps.points).deferred_content(event.appid, event.openid, _ask(event))


async def _record(event: ReplyDeferred, ctx: EventContext[NotifyDeps]) -> None:
    content: str | None = ctx.prefetched
    if not content:
        return
    body = {"touser": event.openid, "msgtype": "text", "text": {"content": content}}
    await DeliveryRepository(ctx.uow.conn).record(
        "customer_service", event.appid, event.openid, str(ctx.envelope.event_id), body
    )


on_reply_deferred = Prefetching(fetch=_content, apply=_record)
