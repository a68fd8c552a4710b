"""gateway: Siyu's only public door — WeChat pushes and the mini-program API."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import httpx
from fastapi import FastAPI

from services.gateway.admin.endpoints import router as admin
from services.gateway.deadletters.endpoints import router as dead_letters
from services.gateway.deps import make_deps
from services.gateway.idempotency.service import idempotency_janitor
from services.gateway.loyalty.endpoints import router as loyalty
from services.gateway.members.endpoints import router as members
from services.gateway.messaging.endpoints import router as messaging
from services.gateway.pushes.endpoints import router as pushes
from services.gateway.pushes.service import push_log_janitor
from services.gateway.ratelimit.service import rate_limit_janitor
from services.gateway.replies.service import reply_rules_refresher
from services.gateway.sessions.endpoints import router as sessions
from services.gateway.settings import GatewaySettings
from services.gateway.subscriptions import SUBSCRIPTIONS
from services.gateway.upstreams import Service
from shared.app import create_service_app
from shared.settings import load_settings


def create_app(
    settings: GatewaySettings | None = None,
    *,
    upstream_transports: Mapping[Service, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """``upstream_transports`` are for tests: identity, commerce and notify in-process."""
    settings = settings or load_settings(GatewaySettings)
    settings.wechat_apps  # noqa: B018 - fail at start, not at the first push, on a bad apps file
    return create_service_app(
        settings,
        make_deps=functools.partial(make_deps, upstream_transports=upstream_transports),
        routers=[pushes, sessions, members, loyalty, messaging, admin, dead_letters],
        subscriptions=SUBSCRIPTIONS,
        background=[reply_rules_refresher, push_log_janitor, rate_limit_janitor, idempotency_janitor],
        description=__doc__ or "",
    )
