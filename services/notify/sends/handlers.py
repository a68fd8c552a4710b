"""Domain events become messages through the rules; WeChat's receipts update the send log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from services.notify.rules.service import Rendered, RenderError, Rule, render
from services.notify.sends.repository import SendRepository
from services.notify.sends.service import SendService
from shared.bus.consumer import EventContext, PoisonMessage
from shared.events import EventData, WeChatPushReceived
from shared.observability import get_logger
from shared.wechat.apps import AppKind
from shared.wechat.push import SubscribeMsgEvent, TemplateSendJobFinishEvent, parse_push

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

log = get_logger(__name__)


class ReceiptTooEarly(Exception):
    """A receipt for a send whose result is not recorded yet: the consumer retries it shortly."""


def event_values(event: EventData, ctx: EventContext[Any]) -> dict[str, Any]:
    values = event.model_dump()
    values.setdefault("event_id", str(ctx.envelope.event_id))
    values.setdefault("occurred_at", ctx.envelope.occurred_at)
    return values


async def apply_rule(rule: Rule, values: dict[str, Any], ctx: EventContext[NotifyDeps]) -> None:
    member_id = values.get(rule.member)
    if not member_id or not rule.matches(values):
        return
    deps = ctx.deps
    try:
        rendered = render(rule, values)
    except RenderError as exc:
        # The rule and the event disagree: that is the file's fault and no retry mends it.
        raise PoisonMessage(f"rule {rule.name}: {exc}") from None
    keyed = Rendered(rendered.data, rendered.page, rendered.text, f"{rule.name}:{rendered.key}:{member_id}")
    decision = await SendService(ctx.uow, deps.library, deps.quiet).decide(rule, keyed, str(member_id), deps.clock())
    log.info(
        "message.decided", rule=rule.name, status=decision.status, channel=decision.channel, reason=decision.reason
    )


async def on_rule_event(event: EventData, ctx: EventContext[NotifyDeps]) -> None:
    """Every rule on this event type, each deciding at most one message per member."""
    values = event_values(event, ctx)
    for rule in ctx.deps.rules.for_event(ctx.envelope.type):
        await apply_rule(rule, values, ctx)


async def on_template_job_finish(event: WeChatPushReceived, ctx: EventContext[NotifyDeps]) -> None:
    """TEMPLATESENDJOBFINISH: the template message reached the member (or WeChat says why not)."""
    try:
        push = parse_push(event.payload, AppKind.OFFICIAL_ACCOUNT)
    except (ValidationError, ValueError) as exc:
        raise PoisonMessage(f"not a TEMPLATESENDJOBFINISH push: {exc}") from None
    if not isinstance(push, TemplateSendJobFinishEvent) or not event.msg_id:
        raise PoisonMessage("a job-finish push without MsgID")
    sends = SendRepository(ctx.uow.conn)
    if await sends.receipt_by_msgid(event.appid, event.msg_id, push.delivered, push.status):
        return
    if event.openid and await sends.in_flight(event.appid, event.openid):
        raise ReceiptTooEarly(f"msgid {event.msg_id} is not recorded yet")
    log.info("receipt.unmatched", msgid=event.msg_id)


async def on_subscribe_sent(event: WeChatPushReceived, ctx: EventContext[NotifyDeps]) -> None:
    """subscribe_msg_sent_event: the service account's subscription notice reached the member."""
    try:
        push = parse_push(event.payload, AppKind.OFFICIAL_ACCOUNT if event.app_kind == "oa" else AppKind.MINI_PROGRAM)
    except (ValidationError, ValueError) as exc:
        raise PoisonMessage(f"not a subscribe_msg_sent_event: {exc}") from None
    if not isinstance(push, SubscribeMsgEvent) or not event.openid:
        raise PoisonMessage("a subscribe_msg_sent_event without items or openid")
    sends = SendRepository(ctx.uow.conn)
    for item in push.items:
        reason = None if item.delivered else (item.error_status or item.error_code or "failed")
        if item.msg_id and await sends.receipt_by_msgid(event.appid, item.msg_id, item.delivered, reason):
            continue
        if item.template_id and await sends.receipt_by_template(
            event.appid, event.openid, item.template_id, item.delivered, reason
        ):
            continue
        if await sends.in_flight(event.appid, event.openid):
            raise ReceiptTooEarly("the notice's send is not recorded yet")
