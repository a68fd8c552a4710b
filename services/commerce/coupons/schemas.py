"""The answer of ``GET /api/v1/me/coupons`` (contracts.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class CouponItem(BaseModel):
    coupon_id: str
    title: str
    state: str
    expires_at: datetime


class CouponAsk(BaseModel):
    """``POST /internal/members/{member_id}/coupons``: notify's abandoned-order reminder asks for the
    coupon it offers (the only kind issued on request; welcome and tier coupons follow events)."""

    kind: Literal["abandoned_order"]
    order_id: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$")


class CouponOffer(BaseModel):
    """The coupon the reminder offers; ``coupon_id`` null (and ``reason`` set) when the member's claim
    limit for this kind is used up — the reminder then goes without a coupon."""

    coupon_id: str | None
    title: str = ""
    expires_at: datetime | None = None
    discount_fen: int | None = None
    min_spend_fen: int | None = None
    reason: str | None = None
