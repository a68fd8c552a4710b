"""commerce: the WeChat Shop mirror, gifting, the points ledger, tiers, the points mall, coupons,
check-ins and affiliate attribution. Its routes are internal (``/internal/...``): the gateway
forwards the mini-program's and the operator's calls to them (services/commerce/README.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI

from services.commerce.checkins.endpoints import router as checkins
from services.commerce.checkout.endpoints import router as checkout
from services.commerce.coupons.endpoints import router as coupons
from services.commerce.deps import CommerceDeps, make_deps
from services.commerce.gifts.endpoints import router as gifts
from services.commerce.jobs import housekeeping, reconcile_orders
from services.commerce.members.endpoints import router as members
from services.commerce.orders.endpoints import router as orders
from services.commerce.points.endpoints import router as points
from services.commerce.retention import retention_forever
from services.commerce.rewards.endpoints import router as rewards
from services.commerce.settings import CommerceSettings
from services.commerce.subscriptions import SUBSCRIPTIONS
from services.manifests import consumed_types
from shared.app import Runtime, create_service_app
from shared.settings import load_settings

ROUTERS = (checkout, points, orders, gifts, rewards, coupons, checkins, members)


def create_app(
    settings: CommerceSettings | None = None,
    *,
    deps: Callable[[Runtime[CommerceSettings]], Awaitable[CommerceDeps]] = make_deps,
) -> FastAPI:
    """The commerce app; ``deps`` builds its dependencies at start (tests put the sandbox in)."""
    settings = settings or load_settings(CommerceSettings)
    return create_service_app(
        settings,
        make_deps=deps,
        routers=ROUTERS,
        subscriptions=SUBSCRIPTIONS,
        background=[reconcile_orders, housekeeping, retention_forever],
        consumed_types=consumed_types(),
        description=__doc__ or "",
    )
