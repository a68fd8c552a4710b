"""Identity's subscription manifest: every event type it consumes and its handler."""

from __future__ import annotations

from services.identity.follows.handlers import on_oa_follow
from shared.bus.consumer import Handler

SUBSCRIPTIONS: dict[str, Handler] = {
    "wechat.oa.subscribe": on_oa_follow,
    "wechat.oa.scan": on_oa_follow,
    "wechat.oa.unsubscribe": on_oa_follow,
}
