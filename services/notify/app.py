"""notify: decides whether, when and how to reach a member — today the service account's passive
replies and their customer-service fallback; the notify issue grows it into rules, templates,
subscriptions and limits."""

from __future__ import annotations

from fastapi import FastAPI

from services.notify.models import BUS
from services.notify.replies.endpoints import router as replies
from services.notify.replies.handlers import NotifyDeps
from services.notify.replies.rules import load_rules
from services.notify.settings import NotifySettings
from services.notify.subscriptions import SUBSCRIPTIONS
from shared.app import Runtime, create_service_app
from shared.settings import ServiceSettings, load_settings
from shared.wechat.client import WeChatClient


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or load_settings(NotifySettings)
    assert isinstance(settings, NotifySettings)
    rules = load_rules(settings.reply_rules_file)  # a bad rules file stops the start, not the first reply
    apps = settings.wechat_apps

    async def make_deps(rt: Runtime) -> NotifyDeps:
        return NotifyDeps(wechat=WeChatClient.create(rt.settings.wechat_api_base, apps), rules=rules)

    return create_service_app(
        settings,
        tables=BUS,
        routers=[replies],
        subscriptions=SUBSCRIPTIONS,
        make_deps=make_deps,
        description=__doc__ or "",
    )
