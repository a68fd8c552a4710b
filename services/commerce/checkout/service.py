"""Checkout rules: whether a buyer gets the member price.

Policy until member tiers exist (commerce issue): WeChat offers the member price only to buyers
identity reported as members (``channels_ec_vip_user_info_get``), so commerce does not check
membership again; it allows the discount once per WeChat ``unique_id`` and keeps the reservation
so a release or an after-sale can find it. A retry of a use that was released in between is not
granted again.
"""

from __future__ import annotations

from services.commerce.checkout.repository import VipDiscountRepository
from services.commerce.checkout.schemas import DiscountRequest
from shared.uow import UnitOfWork

GRANTED = 1
REFUSED = 2


class CheckoutService:
    def __init__(self, uow: UnitOfWork) -> None:
        self.discounts = VipDiscountRepository(uow.conn)

    async def use_vip_discount(self, request: DiscountRequest, *, openid: str) -> int:
        """WeChat's ``result``: 1 grants the member price, 2 refuses it."""
        status = await self.discounts.reserve(
            request.unique_id,
            order_session_id=request.order_session_id,
            shop_appid=request.shop_appid,
            openid=openid,
            price_info=request.price_info,
        )
        return GRANTED if status == "reserved" else REFUSED

    async def release_vip_discount(self, unique_id: str) -> None:
        await self.discounts.release(unique_id)
