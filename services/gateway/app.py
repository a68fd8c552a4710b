"""gateway: Siyu's only public door — WeChat pushes and the mini-program API."""

from __future__ import annotations

from fastapi import FastAPI

from services.gateway.callbacks.routes import router as callbacks
from services.gateway.models import BUS
from services.gateway.settings import GatewaySettings
from shared.app import create_service_app
from shared.settings import ServiceSettings, load_settings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or load_settings(GatewaySettings)
    settings.wechat_apps  # noqa: B018 - fail at start, not at the first push, on a bad apps file
    return create_service_app(settings, tables=BUS, routers=[callbacks], description=__doc__ or "")
