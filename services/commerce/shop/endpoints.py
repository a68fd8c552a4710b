"""Synchronous shop callbacks commerce answers, routed by the gateway under its reply budget.

Policy until member tiers exist (commerce issue): a membership discount WeChat computed for a
buyer the brand recognised as a member (``channels_ec_vip_user_info_get``) is allowed and
reserved by WeChat's ``unique_id``, so a release or an after-sale can find it. Answers are the
JSON WeChat expects (shop.md §3.2).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.commerce.models import VipDiscountReservation
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
    await session.execute(
        pg_insert(VipDiscountReservation)
        .values(
            unique_id=str(info["unique_id"]),
            order_session_id=str(info.get("order_session_id") or "") or None,
            shop_appid=info.get("shop_appid"),
            openid=body.openid,
            status="reserved",
            price_info=info.get("price_info") if isinstance(info.get("price_info"), dict) else {},
        )
        .on_conflict_do_nothing(index_elements=["unique_id"])
    )
    return {**OK, "result": 1}


@router.post("/vip-discount/release")
async def release_vip_discount(body: ShopCallback, session: SessionDep) -> dict[str, Any]:
    info = body.payload.get("order_info") if isinstance(body.payload.get("order_info"), dict) else body.payload
    unique_id = info.get("unique_id") if isinstance(info, dict) else None
    if unique_id is None:
        raise Unprocessable("the callback has no unique_id")
    await session.execute(
        update(VipDiscountReservation)
        .where(VipDiscountReservation.unique_id == str(unique_id), VipDiscountReservation.status == "reserved")
        .values(status="released", released_at=datetime.now(UTC))
    )
    return OK


@router.post("/order-info-init")
async def order_info_init(body: ShopCallback) -> dict[str, Any]:
    # No default checkout benefits until tiers exist: the page shows the normal price.
    return OK
