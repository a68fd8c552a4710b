"""identity: one member per person across the service account, the mini-program and the shop."""

from __future__ import annotations

from fastapi import FastAPI

from services.identity.api import router
from services.identity.handlers import IdentityDeps
from services.identity.models import BUS
from services.identity.settings import IdentitySettings
from services.identity.subscriptions import SUBSCRIPTIONS
from shared.app import Runtime, create_service_app
from shared.settings import ServiceSettings, load_settings
from shared.wechat.client import WeChatClient


async def make_deps(rt: Runtime) -> IdentityDeps:
    apps = rt.settings.wechat_apps
    return IdentityDeps(wechat=WeChatClient.create(rt.settings.wechat_api_base, apps), apps=apps)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or load_settings(IdentitySettings)
    settings.wechat_apps  # noqa: B018 - fail at start, not at the first event, on a bad apps file
    return create_service_app(
        settings,
        tables=BUS,
        routers=[router],
        subscriptions=SUBSCRIPTIONS,
        make_deps=make_deps,
        description=__doc__ or "",
    )
