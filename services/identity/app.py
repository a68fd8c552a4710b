"""identity: one member per person across the service account, the mini-program and the shop."""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI

from services.identity.api import router
from services.identity.crypto import DataVault
from services.identity.handlers import IdentityDeps
from services.identity.models import BUS
from services.identity.schedule import run_schedule
from services.identity.settings import IdentitySettings
from services.identity.subscriptions import SUBSCRIPTIONS
from shared.app import Runtime, create_service_app
from shared.settings import ServiceSettings, load_settings
from shared.wechat.client import WeChatClient


def make_vault(settings: ServiceSettings) -> DataVault:
    key = settings.data_key_value if isinstance(settings, IdentitySettings) else settings.session_secret_value
    return DataVault(key)


async def make_deps(rt: Runtime) -> IdentityDeps:
    apps = rt.settings.wechat_apps
    return IdentityDeps(
        wechat=WeChatClient.create(rt.settings.wechat_api_base, apps), apps=apps, vault=make_vault(rt.settings)
    )


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or cast(ServiceSettings, load_settings(IdentitySettings))
    settings.wechat_apps  # noqa: B018 - fail at start, not at the first event, on a bad apps file
    make_vault(settings)  # and on a bad data key
    return create_service_app(
        settings,
        tables=BUS,
        routers=[router],
        subscriptions=SUBSCRIPTIONS,
        make_deps=make_deps,
        background=[run_schedule],
        description=__doc__ or "",
    )
