"""commerce: WeChat Shop mirror, gifting, points and tiers (built by the commerce issue)."""

from __future__ import annotations

from fastapi import FastAPI

from services.commerce.models import BUS
from services.commerce.settings import CommerceSettings
from services.commerce.shop.endpoints import router as shop
from shared.app import create_service_app
from shared.settings import ServiceSettings, load_settings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or load_settings(CommerceSettings)
    return create_service_app(settings, tables=BUS, routers=[shop], description=__doc__ or "")
