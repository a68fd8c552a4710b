"""The answers of the loyalty routes: exactly the contract's shapes (contracts.md, "Commerce and notify
routes"). The same models read commerce's answers: what commerce adds beyond them is not passed on,
an optional field commerce left out stays out, and money, points and ids keep their types (ids are
strings: shop order ids have 19 digits)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

# commerce's own bounds, checked here first so a bad request never leaves the edge.
REWARD_ID = r"^[a-z0-9][a-z0-9_-]{2,63}$"
LEDGER_CURSOR = r"^[0-9]{1,18}$"


class LedgerEntry(BaseModel):
    entry_id: str
    kind: str = Field(description="earn, redeem, expire, reverse, adjust, checkin")
    points: int = Field(description="Signed: negative for what left the balance.")
    state: str = Field(description="pending, available, expired, reversed, spent, released, merged")
    order_id: str | None = Field(default=None, description="The shop order the entry is about; absent when none.")
    created_at: datetime


class LedgerPage(BaseModel):
    entries: list[LedgerEntry] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class OrderItem(BaseModel):
    order_id: str
    status: int = Field(
        description="The WeChat Shop's status code (10 unpaid, 20 paid, 30 shipped, 100 completed, ...)."
    )
    paid_fen: int
    is_gift: bool
    points: int = Field(description="Points this order earned the member.")


class RewardItem(BaseModel):
    reward_id: str
    title: str
    cost_points: int
    kind: Literal["coupon", "product"]
    remaining: int


class RedeemedCoupon(BaseModel):
    coupon_id: str
    title: str
    expires_at: datetime


class Redemption(BaseModel):
    redemption_id: str
    points_spent: int
    coupon: RedeemedCoupon | None = Field(
        default=None, description="The coupon a coupon reward issued; absent otherwise."
    )


class CouponItem(BaseModel):
    coupon_id: str
    title: str
    state: str = Field(description="available, used, expired")
    expires_at: datetime


class CheckIn(BaseModel):
    points: int = Field(description="Points this check-in earned (a streak's bonus included).")
    streak: int = Field(description="Consecutive Beijing days checked in, today included.")


class GiftItem(BaseModel):
    order_id: str
    present_order_id: str
    role: Literal["giver", "recipient"]
    state: Literal["waiting", "accepted", "expired", "cancelled"]
    points: int


LEDGER = TypeAdapter(LedgerPage)
ORDERS = TypeAdapter(list[OrderItem])
REWARDS = TypeAdapter(list[RewardItem])
REDEMPTION = TypeAdapter(Redemption)
COUPONS = TypeAdapter(list[CouponItem])
CHECK_IN = TypeAdapter(CheckIn)
GIFTS = TypeAdapter(list[GiftItem])
