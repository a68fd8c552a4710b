"""Requests and answers of the points mall (contracts.md), and what fulfilment is handed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RewardItem(BaseModel):
    reward_id: str
    title: str
    cost_points: int
    kind: Literal["coupon", "product"]
    remaining: int


class CouponSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    discount_fen: int = Field(gt=0, le=10_000_000)
    min_spend_fen: int = Field(default=0, ge=0, le=100_000_000)
    validity_days: int = Field(default=30, gt=0, le=366)
    shop_coupon_id: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$")


class NewReward(BaseModel):
    """An operator adds a reward to the mall."""

    model_config = ConfigDict(extra="forbid")

    reward_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{2,63}$")
    title: str = Field(min_length=1, max_length=60)
    kind: Literal["coupon", "product"]
    cost_points: int = Field(gt=0, le=100_000_000)
    stock: int = Field(ge=0, le=10_000_000)
    coupon: CouponSpec | None = None

    @model_validator(mode="after")
    def _coupon_for_coupons(self) -> NewReward:
        if (self.kind == "coupon") != (self.coupon is not None):
            raise ValueError("a coupon reward needs `coupon` (and only a coupon reward has one)")
        return self


class RedeemedCoupon(BaseModel):
    coupon_id: str
    title: str
    expires_at: datetime


class RedemptionAnswer(BaseModel):
    redemption_id: str
    points_spent: int
    coupon: RedeemedCoupon | None = None


@dataclass(frozen=True)
class Fulfilment:
    """A reserved redemption about to be fulfilled (points and stock are held for it)."""

    redemption_id: str
    member_id: str
    reward_id: str
    kind: str
    points: int
