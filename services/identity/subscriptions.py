"""Identity's subscription manifest: every event type it consumes and its handler."""

from __future__ import annotations

from services.identity.behaviour.handlers import on_gift_accepted, on_gift_sent, on_order_paid, on_tier_changed
from services.identity.follows.handlers import on_oa_follow
from shared.bus.consumer import Handler

SUBSCRIPTIONS: dict[str, Handler] = {
    "wechat.oa.subscribe": on_oa_follow,
    "wechat.oa.scan": on_oa_follow,
    "wechat.oa.unsubscribe": on_oa_follow,
    # commerce's orders and gifts: the profile counters behind the buyer and gift rule tags.
    "commerce.order.paid": on_order_paid,
    "commerce.gift.sent": on_gift_sent,
    "commerce.gift.accepted": on_gift_accepted,
    # commerce's tier: the member's tier_<name> tag (segments, conditional menus).
    "commerce.tier.changed": on_tier_changed,
}
