"""Synchronous shop callbacks commerce answers, routed by the gateway under its reply budget.

Answers are the JSON WeChat expects (shop.md §3.2).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from services.commerce.checkout.schemas import OK, CallbackAnswer, DiscountRequest, ShopCallback
from services.commerce.checkout.service import CheckoutService
from services.commerce.deps import Deps
from shared.app import InternalOnly
from shared.errors import Unprocessable

router = APIRouter(prefix="/internal/shop", dependencies=[InternalOnly], tags=["internal"])


def _discount_request(payload: dict[str, Any]) -> DiscountRequest:
    info = payload.get("order_info") if isinstance(payload.get("order_info"), dict) else payload
    if not isinstance(info, dict) or not isinstance(info.get("unique_id"), str | int):
        raise Unprocessable("the callback has no order_info.unique_id")
    try:
        return DiscountRequest.model_validate({**info, "unique_id": str(info["unique_id"])}, strict=False)
    except ValidationError as exc:
        raise Unprocessable(f"the callback's order_info is invalid: {exc.errors()[0]['msg']}") from None


@router.post("/vip-discount/use", response_model=CallbackAnswer, response_model_exclude_none=True)
async def use_vip_discount(body: ShopCallback, deps: Deps) -> CallbackAnswer:
    request = _discount_request(body.payload)
    async with deps.db.unit_of_work() as uow:
        result = await CheckoutService(uow).use_vip_discount(request, openid=body.openid)
    return CallbackAnswer(result=result)


@router.post("/vip-discount/release", response_model=CallbackAnswer, response_model_exclude_none=True)
async def release_vip_discount(body: ShopCallback, deps: Deps) -> CallbackAnswer:
    request = _discount_request(body.payload)
    async with deps.db.unit_of_work() as uow:
        await CheckoutService(uow).release_vip_discount(request.unique_id)
    return CallbackAnswer()


@router.post("/order-info-init", response_model=CallbackAnswer, response_model_exclude_none=True)
async def order_info_init(body: ShopCallback) -> CallbackAnswer:
    # No default checkout benefits until tiers exist: the page shows the normal price.
    return CallbackAnswer(**OK)
