"""The operator's member view: what ``GET /admin/v1/members/{member_id}`` shows of commerce — tier,
points (with the latest ledger entries), orders (with their affiliate), gifts, coupons, redemptions
and the orders this member brought in as a sharer. One consistent snapshot (repeatable read)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from services.commerce.affiliates.repository import AffiliateRepository
from services.commerce.coupons.repository import CouponRepository
from services.commerce.deps import Deps
from services.commerce.gifts.repository import GiftRepository
from services.commerce.gifts.service import contract_state
from services.commerce.orders.repository import OrderRepository
from services.commerce.points.endpoints import ledger_entry, points_summary
from services.commerce.points.repository import PointsRepository
from services.commerce.rewards.repository import RewardRepository
from shared.app import InternalOnly
from shared.db import json_dumps

router = APIRouter(prefix="/internal/admin", dependencies=[InternalOnly], tags=["internal"])


def _rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]


@router.get("/members/{member_id}")
async def admin_member(member_id: uuid.UUID, deps: Deps) -> Response:
    mid = str(member_id)
    async with deps.db.unit_of_work(isolation="repeatable_read", readonly=True) as uow:
        conn = uow.conn
        summary = await points_summary(conn, deps.settings, mid, deps.clock())
        ledger = await PointsRepository(conn).ledger(mid, None, 20)
        orders = await OrderRepository(conn).admin_orders(mid, 100)
        gifts = await GiftRepository(conn).of_member(mid, 100)
        coupons = await CouponRepository(conn).of_member(mid, deps.clock(), 100)
        redemptions = await RewardRepository(conn).of_member(mid, 100)
        shared = await AffiliateRepository(conn).by_sharer(mid, 100)
    body = {
        "member_id": mid,
        "tier": summary["tier"],
        "points": {**summary["points"], "ledger": [ledger_entry(r) for r in ledger]},
        "orders": _rows(orders),
        "gifts": [
            {
                "order_id": g["order_id"],
                "present_order_id": g["present_order_id"],
                "role": g["role"],
                "state": contract_state(g["state"], g["accepted_at"] is not None),
                "points": int(g["points"]),
            }
            for g in gifts
        ],
        "coupons": _rows(coupons),
        "redemptions": _rows(redemptions),
        "affiliate_orders": _rows(shared),
    }
    # json_dumps (orjson): datetimes in ISO 8601, as every Siyu answer writes them.
    return Response(json_dumps(body), media_type="application/json")
