"""subscribe_msg_popup_event / subscribe_msg_change_event pushes update the ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from services.notify.authorisations.service import Answer, AuthorisationService
from shared.bus.consumer import EventContext, PoisonMessage
from shared.events import WeChatPushReceived
from shared.wechat.apps import AppKind
from shared.wechat.push import SubscribeMsgEvent, parse_push

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

_KINDS = {"oa": AppKind.OFFICIAL_ACCOUNT, "mp": AppKind.MINI_PROGRAM}


def _parse(event: WeChatPushReceived) -> SubscribeMsgEvent:
    try:
        push = parse_push(event.payload, _KINDS[event.app_kind])
    except (ValidationError, ValueError, KeyError) as exc:
        raise PoisonMessage(f"not a subscribe-message push: {exc}") from None
    if not isinstance(push, SubscribeMsgEvent):
        raise PoisonMessage(f"{event.name} is not a subscribe-message push")
    return push


async def on_subscribe_popup(event: WeChatPushReceived, ctx: EventContext[NotifyDeps]) -> None:
    if not event.openid:
        raise PoisonMessage("a popup push without an openid")
    push = _parse(event)
    service = AuthorisationService(ctx.uow, ctx.deps.library)
    at = datetime.fromtimestamp(event.create_time, UTC)
    for item in push.items:
        if item.template_id:
            answer: Answer = "accept" if item.accepted else "reject"
            await service.answer(event.appid, event.openid, item.template_id[:64], answer, "push", at)


async def on_subscribe_change(event: WeChatPushReceived, ctx: EventContext[NotifyDeps]) -> None:
    if not event.openid:
        raise PoisonMessage("a change push without an openid")
    push = _parse(event)
    service = AuthorisationService(ctx.uow, ctx.deps.library)
    for item in push.items:
        if item.template_id:
            await service.changed(event.appid, event.openid, item.template_id[:64], item.accepted)
