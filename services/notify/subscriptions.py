"""notify's subscription manifest: every event type it consumes and its handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.notify.abandoned.handlers import order_cancelled, order_paid, watch_order
from services.notify.authorisations.handlers import on_subscribe_change, on_subscribe_popup
from services.notify.funnel.handlers import attribute_order
from services.notify.members.handlers import (
    WINDOW_OPENERS,
    on_follow_changed,
    on_member_linked,
    on_member_merged,
    on_member_registered,
    on_unsubscribe_push,
    on_window_push,
)
from services.notify.replies.handlers import on_reply_deferred
from services.notify.rules.service import load_rules
from services.notify.sends.handlers import on_rule_event, on_subscribe_sent, on_template_job_finish
from services.notify.settings import NotifySettings
from shared.bus.consumer import EventContext, Handler


def _all(*handlers: Callable[[Any, EventContext[Any]], Awaitable[None]]) -> Handler:
    """One event, several effects, one unit of work (the inbox's)."""

    async def handle(event: Any, ctx: EventContext[Any]) -> None:
        for h in handlers:
            await h(event, ctx)

    handle.__name__ = "+".join(h.__name__ for h in handlers)
    return handle


# Order events: their rules, plus the abandoned-order watch and the funnel's conversions.
_ORDER_EXTRAS: dict[str, tuple[Callable[[Any, EventContext[Any]], Awaitable[None]], ...]] = {
    "commerce.order.created": (watch_order,),
    "commerce.order.paid": (order_paid, attribute_order),
    "commerce.order.cancelled": (order_cancelled,),
}


def _rule_events() -> list[str]:
    # The rules file decides which commerce events notify consumes (its default path: the manifest
    # must be importable without the service's settings, e.g. by services/manifests.py).
    return load_rules(NotifySettings.model_fields["message_rules_file"].default).event_types()


SUBSCRIPTIONS: dict[str, Handler] = {
    "gateway.reply.deferred": on_reply_deferred,
    "identity.member.registered": on_member_registered,
    "identity.member.linked": on_member_linked,
    "identity.member.merged": on_member_merged,
    "identity.follow.changed": on_follow_changed,
    "wechat.oa.unsubscribe": on_unsubscribe_push,
    "wechat.oa.templatesendjobfinish": on_template_job_finish,
    "wechat.oa.subscribe_msg_sent_event": on_subscribe_sent,
    "wechat.oa.subscribe_msg_popup_event": on_subscribe_popup,
    "wechat.mp.subscribe_msg_popup_event": on_subscribe_popup,
    "wechat.oa.subscribe_msg_change_event": on_subscribe_change,
    "wechat.mp.subscribe_msg_change_event": on_subscribe_change,
    **{t: on_window_push for t in WINDOW_OPENERS},
}
for _type in sorted(set(_rule_events()) | set(_ORDER_EXTRAS)):
    extras = _ORDER_EXTRAS.get(_type, ())
    SUBSCRIPTIONS[_type] = _all(on_rule_event, *extras) if _type in _rule_events() else _all(*extras)
