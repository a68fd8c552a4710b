"""``GET /internal/members/{member_id}/coupons`` — the gateway's ``GET /api/v1/me/coupons`` — and
``POST`` of the same path, the coupon notify's abandoned-order reminder offers."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from services.commerce.coupons.repository import CouponRepository
from services.commerce.coupons.schemas import CouponAsk, CouponItem, CouponOffer
from services.commerce.coupons.service import CouponService
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


@router.post("/{member_id}/coupons", status_code=status.HTTP_201_CREATED, response_model=CouponOffer)
async def offer_coupon(member_id: uuid.UUID, body: CouponAsk, deps: Deps, response: Response) -> CouponOffer:
    """201 with the coupon issued for this order; 200 with the same coupon when asked again for the
    same order (the reminder's retry); 200 with ``coupon_id`` null when the member's claim limit
    (one abandoned-order coupon per ``COMMERCE_ABANDONED_COUPON_EVERY_DAYS``) is used up."""
    async with deps.db.unit_of_work() as uow:
        row, issued = await CouponService(uow, deps.settings, deps.clock()).offer_abandoned(
            str(member_id), body.order_id
        )
    if row is None:
        response.status_code = status.HTTP_200_OK
        return CouponOffer(coupon_id=None, reason="claim limit: an abandoned-order coupon was issued in this period")
    if not issued:
        response.status_code = status.HTTP_200_OK
    return CouponOffer(
        coupon_id=row["coupon_id"],
        title=row["title"],
        expires_at=row["expires_at"],
        discount_fen=row["discount_fen"],
        min_spend_fen=row["min_spend_fen"],
    )
