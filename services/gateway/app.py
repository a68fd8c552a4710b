"""gateway: Siyu's only public door — WeChat pushes and the mini-program API."""

from __future__ import annotations

from fastapi import FastAPI

from services.gateway.deps import make_deps
from services.gateway.idempotency.service import idempotency_janitor
from services.gateway.members.endpoints import router as members
from services.gateway.pushes.endpoints import router as pushes
from services.gateway.pushes.service import push_log_janitor
from services.gateway.ratelimit.service import rate_limit_janitor
from services.gateway.replies.service import reply_rules_refresher
from services.gateway.sessions.endpoints import router as sessions
from services.gateway.settings import GatewaySettings
from services.gateway.subscriptions import SUBSCRIPTIONS
from shared.app import create_service_app
from shared.settings import load_settings


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or load_settings(GatewaySettings)
    settings.wechat_apps  # noqa: B018 - fail at start, not at the first push, on a bad apps file
    return create_service_app(
        settings,
        make_deps=make_deps,
        routers=[pushes, sessions, members],
        subscriptions=SUBSCRIPTIONS,
        background=[reply_rules_refresher, push_log_janitor, rate_limit_janitor, idempotency_janitor],
        description=__doc__ or "",
    )
