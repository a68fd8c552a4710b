"""Affiliate attribution: an order's sharer (research/shop.md §6.1) recorded per order — the sharer's
shop openid from ``sharer_info``/``sku_sharer_infos`` resolved to a member when identity knows them,
the channel from ``source_infos`` and the commission from ``commission_infos``."""

from __future__ import annotations

from services.commerce.affiliates.repository import AffiliateRepository
from services.commerce.orders.schemas import MirroredOrder
from shared.events.commerce import AffiliateAttributed
from shared.uow import UnitOfWork


class AffiliateService:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.repo = AffiliateRepository(uow.conn)

    async def attribute(self, order: MirroredOrder, buyer_member_id: str | None, sharer_member_id: str | None) -> None:
        sharer = order.sharer
        if sharer is None:
            return
        first = await self.repo.record(
            {
                "order_id": order.order_id,
                "shop_appid": order.shop_appid,
                "buyer_member_id": buyer_member_id,
                "sharer_openid": sharer.openid,
                "sharer_unionid": sharer.unionid,
                "sharer_member_id": sharer_member_id,
                "sharer_nickname": sharer.nickname,
                "sale_channel": sharer.sale_channel,
                "account_type": sharer.account_type,
                "commission_fen": sharer.commission_fen,
                "commission_settled": sharer.settled,
                "detail": sharer.detail,
            }
        )
        if first:
            self.uow.publish(
                AffiliateAttributed(
                    order_id=order.order_id,
                    shop_appid=order.shop_appid,
                    buyer_member_id=buyer_member_id,
                    sharer_member_id=sharer_member_id,
                    sharer_openid=sharer.openid,
                    sharer_nickname=sharer.nickname,
                    commission_fen=sharer.commission_fen,
                )
            )
