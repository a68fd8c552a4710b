"""The gift state machine (research/shop.md §2.5), driven by the re-fetched order:

``awaiting_payment`` (10) → ``waiting`` (12, paid; expires 24 h after payment) → ``accepted`` (the order
has an owner: the recipient, maybe on a same-price SKU) → ``completed`` (100: the giver's points are
posted pending, available at settlement); ``waiting`` → ``expired`` → ``refunded`` (the shop cancels an
unaccepted gift and refunds the giver); ``awaiting_payment`` → ``cancelled``; a gift refunded in full
after acceptance → ``refunded``.

The recipient's address and phone never reach commerce (orders/schemas.py drops them), so no
answer can show them to the giver.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.commerce.gifts.repository import GiftRepository
from services.commerce.orders.schemas import COMPLETED, MirroredOrder, epoch
from services.commerce.settings import CommerceSettings
from shared.events.commerce import GiftAccepted, GiftCompleted, GiftExpired, GiftRefunded, GiftSent
from shared.uow import UnitOfWork

# Our states → the contract's (contracts.md: waiting, accepted, expired, cancelled).
CONTRACT_STATE = {
    "awaiting_payment": "waiting",
    "waiting": "waiting",
    "accepted": "accepted",
    "completed": "accepted",
    "expired": "expired",
    "cancelled": "cancelled",
}


def contract_state(state: str, accepted: bool) -> str:
    if state == "refunded":
        return "cancelled" if accepted else "expired"
    return CONTRACT_STATE.get(state, "waiting")


class GiftService:
    def __init__(self, uow: UnitOfWork, settings: CommerceSettings, now: datetime) -> None:
        self.uow = uow
        self.repo = GiftRepository(uow.conn)
        self.settings = settings
        self.now = now

    async def observe(
        self,
        order: MirroredOrder,
        *,
        giver_member_id: str | None,
        recipient_member_id: str | None,
        recipient_is_new: bool,
    ) -> set[str]:
        """Move the gift as far as the order shows; the transitions made now (``completed`` asks the
        caller to post the giver's points)."""
        assert order.present_order_id is not None
        pid = order.present_order_id
        original_sku, accepted_sku = order.swap()
        await self.repo.open(
            pid,
            order.order_id,
            order.shop_appid,
            giver_member_id,
            order.giver_openid,
            order.title,
            order.order_price_fen,
            original_sku,
        )
        base = {
            "present_order_id": pid,
            "order_id": order.order_id,
            "shop_appid": order.shop_appid,
            "giver_member_id": giver_member_id,
            "giver_openid": order.giver_openid,
            "title": order.title,
            "paid_fen": order.order_price_fen,
        }
        made: set[str] = set()
        if order.pay_time:
            paid_at = epoch(order.pay_time)
            expires_at = paid_at + timedelta(seconds=self.settings.gift_ttl_seconds)
            if await self.repo.paid(pid, paid_at, expires_at):
                made.add("sent")
                self.uow.publish(GiftSent(**base, expires_at=expires_at))
        cancelled = order.status in (200, 250)
        if order.recipient_openid and not (cancelled and order.status == 250):
            swapped = bool(original_sku and accepted_sku and original_sku != accepted_sku)
            if await self.repo.accepted(
                pid,
                recipient_member_id=recipient_member_id,
                recipient_openid=order.recipient_openid,
                original_sku_id=original_sku,
                accepted_sku_id=accepted_sku,
                swapped=swapped,
                at=self.now,
            ):
                made.add("accepted")
                self.uow.publish(
                    GiftAccepted(
                        **base,
                        recipient_member_id=recipient_member_id,
                        recipient_openid=order.recipient_openid,
                        recipient_is_new=recipient_is_new,
                        swapped=swapped,
                        original_sku_id=original_sku,
                        accepted_sku_id=accepted_sku,
                    )
                )
        if order.status == COMPLETED and await self.repo.move_state(pid, ["accepted"], "completed", self.now):
            made.add("completed")
        if cancelled:
            if not order.pay_time:
                if await self.repo.move_state(pid, ["awaiting_payment"], "cancelled", self.now):
                    made.add("cancelled")
            elif await self.repo.move_state(pid, ["waiting", "awaiting_payment"], "expired", self.now):
                made.add("expired")
                self.uow.publish(GiftExpired(**base))
                await self.repo.move_state(pid, ["expired"], "refunded", self.now)
                self.uow.publish(GiftRefunded(**base, refunded_fen=order.order_price_fen))
            elif await self.repo.move_state(pid, ["accepted", "completed"], "refunded", self.now):
                made.add("refunded")
                self.uow.publish(
                    GiftRefunded(**base, recipient_member_id=recipient_member_id, refunded_fen=order.order_price_fen)
                )
        return made

    def completed(self, order: MirroredOrder, giver_member_id: str | None, points: int, recipient: str | None) -> None:
        assert order.present_order_id is not None
        self.uow.publish(
            GiftCompleted(
                present_order_id=order.present_order_id,
                order_id=order.order_id,
                shop_appid=order.shop_appid,
                giver_member_id=giver_member_id,
                giver_openid=order.giver_openid,
                recipient_member_id=recipient,
                title=order.title,
                paid_fen=order.order_price_fen,
                points_pending=points,
            )
        )
