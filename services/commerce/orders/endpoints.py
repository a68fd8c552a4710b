"""``GET /internal/members/{member_id}/orders`` — the gateway's ``/api/v1/me/orders`` — and the
operator's view of one order (``GET /internal/admin/orders/{order_id}``: status history, after-sales,
affiliate)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services.commerce.affiliates.repository import AffiliateRepository
from services.commerce.deps import Deps
from services.commerce.orders.repository import OrderRepository
from services.commerce.orders.schemas import OrderItem
from shared.app import InternalOnly
from shared.errors import NotFound

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])

OrderId = Annotated[str, Path(pattern=r"^[0-9]{1,32}$")]


@router.get("/members/{member_id}/orders", response_model=list[OrderItem])
async def member_orders(
    member_id: uuid.UUID, deps: Deps, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[OrderItem]:
    """The member's shop orders, newest first, gifts sent and received included."""
    async with deps.db.connection() as conn:
        rows = await OrderRepository(conn).member_orders(str(member_id), limit)
    return [OrderItem(**dict(r)) for r in rows]


@router.get("/admin/orders/{order_id}")
async def admin_order(order_id: OrderId, deps: Deps) -> dict[str, Any]:
    async with deps.db.unit_of_work(isolation="repeatable_read", readonly=True) as uow:
        repo = OrderRepository(uow.conn)
        order = await repo.order(order_id)
        if order is None:
            raise NotFound(f"no order {order_id} in the mirror")
        history = await repo.history(order_id)
        aftersales = await repo.aftersales_of(order_id)
        affiliate = await AffiliateRepository(uow.conn).of_order(order_id)
    out = {k: v for k, v in dict(order).items() if k not in ("openid", "unionid")}
    return {
        **out,
        "history": [dict(h) for h in history],
        "aftersales": [dict(a) for a in aftersales],
        "affiliate": (
            {k: v for k, v in dict(affiliate).items() if k not in ("sharer_openid", "sharer_unionid")}
            if affiliate
            else None
        ),
    }
