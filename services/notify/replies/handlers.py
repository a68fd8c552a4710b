"""A reply the gateway could not give in time goes out as a customer-service message."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.notify.models import Delivery
from services.notify.replies.rules import ReplyRules
from shared.bus.consumer import EventContext
from shared.events import ReplyDeferred
from shared.observability import get_logger
from shared.wechat.client import WeChatClient
from shared.wechat.errors import WeChatAPIError, WeChatUnavailable

log = get_logger(__name__)


@dataclass
class NotifyDeps:
    wechat: WeChatClient
    rules: ReplyRules

    async def aclose(self) -> None:
        await self.wechat.aclose()


async def on_reply_deferred(event: ReplyDeferred, ctx: EventContext[NotifyDeps]) -> None:
    content = ctx.deps.rules.reply_for(event.trigger, text=event.text, scene=event.scene, key=event.key)
    if not content:
        return
    body = {"touser": event.openid, "msgtype": "text", "text": {"content": content}}
    status, errcode, errmsg = "sent", None, None
    try:
        await ctx.deps.wechat.send_custom_message(event.appid, body)
    except WeChatAPIError as exc:
        if exc.retryable:
            raise  # WeChat said it did nothing (-1, quota): the consumer retries with backoff
        # Outside the 48-hour window (45015), over its count (45047), not a follower (43004): final.
        status, errcode, errmsg = "rejected", exc.errcode, exc.errmsg
        log.warning("reply.rejected", errcode=exc.errcode, appid=event.appid)
    except WeChatUnavailable as exc:
        # A timeout or a 5xx after the request left: it may have been delivered. A courtesy reply
        # sent twice is worse than one lost, so it is recorded as unknown and not retried.
        status, errmsg = "unknown", exc.detail
        log.warning("reply.outcome_unknown", appid=event.appid, error=exc.detail)
    await ctx.session.execute(
        pg_insert(Delivery)
        .values(
            channel="customer_service",
            appid=event.appid,
            openid=event.openid,
            source_event_id=str(ctx.envelope.event_id),
            body=body,
            status=status,
            errcode=errcode,
            errmsg=errmsg,
        )
        .on_conflict_do_nothing(index_elements=["source_event_id"])
    )
