"""WeChat Shop membership linking (小程序会员服务), answered synchronously through the gateway."""

from __future__ import annotations

from fastapi import APIRouter

from services.identity.deps import Deps
from services.identity.shop.repository import ShopRepository
from services.identity.shop.schemas import Ack, ShopCallback, VipInfo, VipInfoAnswer
from shared.app import InternalOnly

router = APIRouter(prefix="/internal/shop", dependencies=[InternalOnly], tags=["shop"])


@router.post("/vip-user-info", response_model=VipInfoAnswer, response_model_exclude_none=True)
async def shop_vip_user_info(body: ShopCallback, deps: Deps) -> VipInfoAnswer:
    """``channels_ec_vip_user_info_get``: is this mini-program user one of our members?

    ``is_vip: true`` makes the shop link the buyer silently, so it is said only for an openid we
    already know through a login; ``outer_userid`` is the member id (shop.md §3.2).
    """
    async with deps.db.connection() as conn:
        member_id = await ShopRepository(conn).member_of(body.appid, body.openid)
    if member_id is None:
        return VipInfoAnswer(info=VipInfo(is_vip=False))
    return VipInfoAnswer(info=VipInfo(is_vip=True, identity="会员", outer_userid=str(member_id)))


@router.post("/vip-user-auto-add", response_model=Ack)
async def shop_vip_user_auto_add(body: ShopCallback) -> Ack:
    """``channels_ec_vip_user_auto_add``: acknowledged; the stored push is the record of it."""
    return Ack()
