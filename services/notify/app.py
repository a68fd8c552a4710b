"""notify: reaching members: rules, templates, subscriptions, limits (built by the notify issue)."""

from __future__ import annotations

from fastapi import FastAPI

from services.notify.models import BUS
from services.notify.settings import NotifySettings
from shared.app import create_service_app
from shared.settings import ServiceSettings, load_settings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or load_settings(NotifySettings)
    return create_service_app(settings, tables=BUS, description=__doc__ or "")
