"""commerce: WeChat Shop mirror, gifting, points and tiers (built by the commerce issue)."""

from __future__ import annotations

from fastapi import FastAPI

from services.commerce.checkout.endpoints import router as checkout
from services.commerce.deps import make_deps
from services.commerce.settings import CommerceSettings
from shared.app import create_service_app
from shared.settings import load_settings


def create_app(settings: CommerceSettings | None = None) -> FastAPI:
    settings = settings or load_settings(CommerceSettings)
    return create_service_app(settings, make_deps=make_deps, routers=[checkout], description=__doc__ or "")
