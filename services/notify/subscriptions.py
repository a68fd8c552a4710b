"""notify's subscription manifest: every event type it consumes and its handler."""

from __future__ import annotations

from services.notify.replies.handlers import on_reply_deferred
from shared.bus.consumer import Handler

SUBSCRIPTIONS: dict[str, Handler] = {
    "gateway.reply.deferred": on_reply_deferred,
}
