"""The order mirror's rules: apply one re-fetched snapshot of an order (from a push, its re-delivery
or the reconcile — it does not matter which, or in what order).

Events are announced once per milestone (``order_milestones``); points are posted from the state
the snapshot shows, each posting idempotent by key, so lost, duplicated and out-of-order pushes
converge on the same ledger:

* paid (own purchase) → pending points for the buyer at their tier, plus a running campaign's bonus;
* a gift completed → pending points for the giver;
* settled → the order's pending points become available;
* every refunded after-sale → its proportional reversal (cumulative over the order's refunds).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.commerce.affiliates.service import AffiliateService
from services.commerce.coupons.service import CouponService
from services.commerce.gifts.service import GiftService
from services.commerce.orders.repository import OrderRepository
from services.commerce.orders.schemas import MILESTONES, MirroredOrder, OrderSnapshot, aftersale_outcome, epoch
from services.commerce.points.service import PointsService, order_points
from services.commerce.settings import CommerceSettings
from services.commerce.tiers.service import TierService
from shared.events.commerce import (
    AfterSaleClosed,
    AfterSaleOpened,
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderPaid,
    OrderRefunded,
    OrderSettled,
    OrderShipped,
)
from shared.uow import UnitOfWork
from shared.wechat.client import ShopAfterSale


class OrderService:
    def __init__(self, uow: UnitOfWork, settings: CommerceSettings, now: datetime) -> None:
        self.uow = uow
        self.settings = settings
        self.now = now
        self.orders = OrderRepository(uow.conn)
        self.points = PointsService(uow, settings, now)
        self.tiers = TierService(uow, settings, now)
        self.gifts = GiftService(uow, settings, now)

    async def apply(self, snap: OrderSnapshot, source: str) -> None:
        order = snap.order
        row = await self.orders.upsert(
            {
                "order_id": order.order_id,
                "shop_appid": order.shop_appid,
                "member_id": snap.buyer_member_id,
                "openid": order.buyer_openid,
                "unionid": order.buyer_unionid,
                "status": order.status,
                "order_price_fen": order.order_price_fen,
                "is_gift": order.is_gift,
                "present_order_id": order.present_order_id,
                "title": order.title,
                "item_count": order.item_count,
                "lines": [line.model_dump() for line in order.lines],
                "detail": order.detail,
                "shop_create_time": order.create_time,
                "shop_update_time": order.update_time,
                "paid_at": epoch(order.pay_time) if order.pay_time else None,
                "settled_at": epoch(order.settle_time) if order.settle_time else None,
            }
        )
        buyer: str | None = row["member_id"]
        await self.orders.record_status(order.order_id, order.status, order.update_time, source)
        reached = await self.orders.reach(order.order_id, order.reached())

        gift_made: set[str] = set()
        if order.is_gift:
            gift_made = await self.gifts.observe(
                order,
                giver_member_id=buyer,
                recipient_member_id=snap.recipient_member_id,
                recipient_is_new=snap.recipient_created,
            )

        # Points follow the state, not the news: each posting is idempotent by its key.
        earned = 0
        if buyer and order.pay_time and not order.is_gift:
            earned = await self._earn(buyer, order, rule="order")
            if "paid" in reached:
                await self.tiers.on_spend_changed(buyer)
        if buyer and order.is_gift and order.status == 100:
            gift_points = await self._earn(buyer, order, rule="gift")
            if "completed" in gift_made:
                self.gifts.completed(order, buyer, gift_points, snap.recipient_member_id)
        if order.is_gift and "paid" in reached and buyer:
            await self.tiers.on_spend_changed(buyer)  # the giver paid: it counts towards their tier
        settled = await self.points.settle_order(order.order_id) if order.settle_time else 0

        base = self._base(order, buyer)
        for milestone in MILESTONES:
            if milestone in reached:
                await self._announce(milestone, order, buyer, base, snap, earned=earned, settled=settled)

        if order.sharer is not None:
            await AffiliateService(self.uow).attribute(order, buyer, snap.sharer_member_id)
        for sale in snap.aftersales:
            if sale.order_id == order.order_id:
                await self._aftersale(sale, order, base, snap)
        await self._reverse_refunds(order)

    async def _earn(self, member_id: str, order: MirroredOrder, *, rule: str) -> int:
        tier = await self.tiers.tier_of(member_id)
        paid_at = epoch(order.pay_time) if order.pay_time else self.now
        bonus = await self.points.repo.campaign_bonus(paid_at)
        points = order_points(order.order_price_fen, self.settings.points_per_yuan, tier.multiplier_pct, bonus)
        posted = await self.points.earn_pending(member_id, order.order_id, points, rule=rule)
        if posted:
            await self.orders.add_points(order.order_id, posted)
        return posted

    @staticmethod
    def _base(order: MirroredOrder, buyer: str | None) -> dict[str, Any]:
        return {
            "order_id": order.order_id,
            "shop_appid": order.shop_appid,
            "member_id": buyer,
            "openid": order.buyer_openid,
            "status": order.status,
            "paid_fen": order.order_price_fen,
            "title": order.title,
            "item_count": order.item_count,
            "lines": order.lines,
            "is_gift": order.is_gift,
            "present_order_id": order.present_order_id,
            "update_time": order.update_time,
        }

    async def _announce(
        self,
        milestone: str,
        order: MirroredOrder,
        buyer: str | None,
        base: dict[str, Any],
        snap: OrderSnapshot,
        *,
        earned: int,
        settled: int,
    ) -> None:
        if milestone == "created":
            self.uow.publish(OrderCreated(**base))
        elif milestone == "paid" and order.pay_time:
            paid_at = epoch(order.pay_time)
            first = bool(buyer) and not await self.orders.paid_before(buyer or "", order.order_id, paid_at)
            self.uow.publish(OrderPaid(**base, paid_at=paid_at, points_pending=earned, first_order=first))
        elif milestone == "shipped":
            last = order.deliveries[-1] if order.deliveries else {}
            self.uow.publish(
                OrderShipped(
                    **base,
                    finish_delivery=order.status in (30, 100),
                    waybill_id=str(last["waybill_id"]) if last.get("waybill_id") else None,
                    delivery_name=str(last["delivery_name"]) if last.get("delivery_name") else None,
                    recipient_member_id=snap.recipient_member_id if order.is_gift else None,
                )
            )
        elif milestone == "completed":
            self.uow.publish(OrderCompleted(**base, completed_at=self.now))
        elif milestone == "settled" and order.settle_time:
            self.uow.publish(OrderSettled(**base, settled_at=epoch(order.settle_time), points_available=settled))
        elif milestone == "cancelled":
            paid = order.pay_time is not None
            cancel_type = 3 if order.status == 200 else (2 if order.is_gift and paid else None)
            self.uow.publish(OrderCancelled(**base, cancel_type=cancel_type, was_paid=paid))
            if not paid and not order.is_gift and buyer:
                await CouponService(self.uow, self.settings, self.now).issue_abandoned(buyer, order.order_id)

    async def _aftersale(
        self, sale: ShopAfterSale, order: MirroredOrder, base: dict[str, Any], snap: OrderSnapshot
    ) -> None:
        # Only the owner opens an after-sale: the buyer, or a gift's recipient.
        member = snap.recipient_member_id if order.is_gift else base["member_id"]
        line = next((ln for ln in order.lines if ln.sku_id == sale.product_info.sku_id), None)
        fields = {
            "after_sale_order_id": sale.after_sale_order_id,
            "order_id": order.order_id,
            "shop_appid": order.shop_appid,
            "member_id": member,
            "openid": sale.openid,
            "type": sale.type,
            "status": sale.status,
            "amount_fen": sale.amount_fen,
            "title": line.title if line else order.title,
            "sku_id": sale.product_info.sku_id,
            "count": sale.product_info.count,
        }
        if await self.orders.open_aftersale(
            {**fields, "product_id": sale.product_info.product_id, "shop_update_time": sale.update_time}
        ):
            self.uow.publish(AfterSaleOpened(**fields))
        await self.orders.update_aftersale(sale.after_sale_order_id, sale.status, sale.amount_fen, sale.update_time)
        outcome = aftersale_outcome(sale.status)
        if outcome is None or not await self.orders.close_aftersale(sale.after_sale_order_id, outcome):
            return
        self.uow.publish(AfterSaleClosed(**fields, outcome=outcome))
        if outcome != "refunded":
            return
        refunded_total = await self.orders.refresh_refunded(order.order_id)
        reversed_now = await self.points.reverse_for_refund(
            order.order_id, sale.after_sale_order_id, refunded_total, order.order_price_fen
        )
        if reversed_now:
            await self.orders.add_points(order.order_id, -reversed_now)
        if base["member_id"]:
            await self.tiers.on_spend_changed(base["member_id"])
        self.uow.publish(
            OrderRefunded(
                **base,
                after_sale_order_id=sale.after_sale_order_id,
                refunded_fen=sale.amount_fen,
                refunded_total_fen=refunded_total,
                points_reversed=reversed_now,
            )
        )

    async def _reverse_refunds(self, order: MirroredOrder) -> None:
        """Every refund of the order reversed, in the order they were made (idempotent per refund):
        a refund recorded before the order earned anything is reversed once it has."""
        running = 0
        for sale in await self.orders.aftersales_of(order.order_id):
            if sale["outcome"] != "refunded":
                continue
            running += sale["amount_fen"]
            taken = await self.points.reverse_for_refund(
                order.order_id, sale["after_sale_order_id"], running, order.order_price_fen
            )
            if taken:
                await self.orders.add_points(order.order_id, -taken)
