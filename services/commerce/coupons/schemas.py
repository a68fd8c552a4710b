"""The answer of ``GET /api/v1/me/coupons`` (contracts.md)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class CouponItem(BaseModel):
    coupon_id: str
    title: str
    state: str
    expires_at: datetime
