"""identity: one member per person across the service account, the mini-program and the shop."""

from __future__ import annotations

from fastapi import FastAPI

from services.identity.behaviour.endpoints import router as behaviour
from services.identity.deps import make_deps, make_vault
from services.identity.logins.endpoints import router as logins
from services.identity.members.endpoints import router as members
from services.identity.phones.endpoints import router as phones
from services.identity.schedule import run_retention, run_schedule
from services.identity.settings import IdentitySettings
from services.identity.shop.endpoints import router as shop
from services.identity.subscriptions import SUBSCRIPTIONS
from services.identity.tags.endpoints import router as tags
from services.identity.wechat_sync.endpoints import router as wechat_sync
from shared.app import create_service_app
from shared.settings import load_settings

ROUTERS = (logins, members, phones, behaviour, tags, wechat_sync, shop)


def create_app(settings: IdentitySettings | None = None) -> FastAPI:
    settings = settings or load_settings(IdentitySettings)
    settings.wechat_apps  # noqa: B018 - fail at start, not at the first event, on a bad apps file
    make_vault(settings)  # and on a bad data key
    return create_service_app(
        settings,
        make_deps=make_deps,
        routers=ROUTERS,
        subscriptions=SUBSCRIPTIONS,
        background=[run_schedule, run_retention],
        description=__doc__ or "",
    )
