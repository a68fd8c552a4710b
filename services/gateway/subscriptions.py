"""The gateway's subscription manifest: every event type it consumes and its handler."""

from __future__ import annotations

from services.gateway.replies.handlers import on_reply_rules_published
from shared.bus.consumer import Handler

SUBSCRIPTIONS: dict[str, Handler] = {
    "notify.reply_rules.published": on_reply_rules_published,
}
