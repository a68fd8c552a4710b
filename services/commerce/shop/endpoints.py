"""Synchronous shop callbacks commerce answers, routed by the gateway under its reply budget.

Policy until member tiers exist (commerce issue): WeChat offers the member price only to buyers
identity reported as members (``channels_ec_vip_user_info_get``), so commerce does not check
membership again; it allows the discount once per WeChat ``unique_id`` and keeps the reservation
so a release or an after-sale can find it. Per-tier budgets arrive with tiers. Answers are the
JSON WeChat expects (shop.md §3.2).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.commerce.shop.repository import VipDiscounts
from shared.app import InternalOnly, SessionDep
from shared.errors import Unprocessable

router = APIRouter(prefix="/internal/shop", dependencies=[InternalOnly], tags=["internal"])

OK: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}


class ShopCallback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    appid: str = Field(max_length=32)
    openid: str = Field(max_length=64)
    payload: dict[str, Any]


def _order_info(body: ShopCallback) -> dict[str, Any]:
    info = body.payload.get("order_info")
    if not isinstance(info, dict) or not isinstance(info.get("unique_id"), str | int):
        raise Unprocessable("the callback has no order_info.unique_id")
    return info


@router.post("/vip-discount/use")
async def use_vip_discount(body: ShopCallback, session: SessionDep) -> dict[str, Any]:
    info = _order_info(body)
    status = await VipDiscounts(session).reserve(str(info["unique_id"]), openid=body.openid, info=info)
    # A retry of a use that was released in between is not granted again.
    return {**OK, "result": 1 if status == "reserved" else 2}


@router.post("/vip-discount/release")
async def release_vip_discount(body: ShopCallback, session: SessionDep) -> dict[str, Any]:
    info = body.payload.get("order_info") if isinstance(body.payload.get("order_info"), dict) else body.payload
    unique_id = info.get("unique_id") if isinstance(info, dict) else None
    if unique_id is None:
        raise Unprocessable("the callback has no unique_id")
    await VipDiscounts(session).release(str(unique_id))
    return OK


@router.post("/order-info-init")
async def order_info_init(body: ShopCallback) -> dict[str, Any]:
    # No default checkout benefits until tiers exist: the page shows the normal price.
    return OK
