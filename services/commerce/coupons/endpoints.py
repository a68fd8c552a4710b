"""``GET /internal/members/{member_id}/coupons`` — the gateway's ``GET /api/v1/me/coupons``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from services.commerce.coupons.repository import CouponRepository
from services.commerce.coupons.schemas import CouponItem
from services.commerce.deps import Deps
from shared.app import InternalOnly

router = APIRouter(prefix="/internal/members", dependencies=[InternalOnly], tags=["internal"])


@router.get("/{member_id}/coupons", response_model=list[CouponItem])
async def member_coupons(
    member_id: uuid.UUID, deps: Deps, limit: Annotated[int, Query(ge=1, le=200)] = 100
) -> list[CouponItem]:
    """``[{"coupon_id", "title", "state" (available, used, expired), "expires_at"}]``, newest first."""
    async with deps.db.connection() as conn:
        rows = await CouponRepository(conn).of_member(str(member_id), deps.clock(), limit)
    return [CouponItem(**{k: r[k] for k in ("coupon_id", "title", "state", "expires_at")}) for r in rows]
