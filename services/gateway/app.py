"""gateway: Siyu's only public door — WeChat pushes and the mini-program API."""

from __future__ import annotations

from fastapi import FastAPI

from services.gateway.api.janitor import prune_api_state
from services.gateway.api.routes import router as api
from services.gateway.callbacks.janitor import prune_inbound_log
from services.gateway.callbacks.routes import router as callbacks
from services.gateway.clients import make_deps
from services.gateway.models import BUS
from services.gateway.settings import GatewaySettings
from shared.app import create_service_app
from shared.settings import ServiceSettings, load_settings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or load_settings(GatewaySettings)
    settings.wechat_apps  # noqa: B018 - fail at start, not at the first push, on a bad apps file
    return create_service_app(
        settings,
        tables=BUS,
        routers=[callbacks, api],
        make_deps=make_deps,
        background=[prune_inbound_log, prune_api_state],
        description=__doc__ or "",
    )
