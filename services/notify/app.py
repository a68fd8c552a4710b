"""notify: decides whether, when and how to reach a member — today the service account's passive
replies (the rules it publishes to the gateway, the replies that need data) and the
customer-service messages that follow them; the notify issue grows it into rules, templates,
subscriptions and limits."""

from __future__ import annotations

from fastapi import FastAPI

from services.notify.deliveries.service import delivery_sender, delivery_sweeper
from services.notify.deps import make_deps
from services.notify.replies.endpoints import router as replies
from services.notify.replies.service import load_rules, reply_rules_publisher
from services.notify.settings import NotifySettings
from services.notify.subscriptions import SUBSCRIPTIONS
from shared.app import create_service_app
from shared.settings import load_settings


def create_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or load_settings(NotifySettings)
    load_rules(settings.reply_rules_file)  # a bad rules file stops the start, not the first reply
    return create_service_app(
        settings,
        make_deps=make_deps,
        routers=[replies],
        subscriptions=SUBSCRIPTIONS,
        background=[reply_rules_publisher, delivery_sender, delivery_sweeper],
        description=__doc__ or "",
    )
