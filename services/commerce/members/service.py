"""A merge (``identity.member.merged``) moves everything commerce keeps for the merged member to the
survivor: points lots and balances (two ledger entries, one each side), orders, after-sales, gifts,
coupons, check-ins (a day both checked in stays with the survivor's), redemptions and affiliate
records; the survivor's tier is recomputed from the orders it now has."""

from __future__ import annotations

from datetime import datetime

from services.commerce.affiliates.repository import AffiliateRepository
from services.commerce.checkins.repository import CheckInRepository
from services.commerce.coupons.repository import CouponRepository
from services.commerce.gifts.repository import GiftRepository
from services.commerce.orders.repository import OrderRepository
from services.commerce.points.service import PointsService
from services.commerce.rewards.repository import RewardRepository
from services.commerce.settings import CommerceSettings
from services.commerce.tiers.repository import TierRepository
from services.commerce.tiers.service import TierService
from shared.uow import UnitOfWork


class MemberService:
    def __init__(self, uow: UnitOfWork, settings: CommerceSettings, now: datetime) -> None:
        self.uow = uow
        self.settings = settings
        self.now = now

    async def merge(self, merged_id: str, survivor_id: str) -> int:
        """The points moved (0 for a replay: the ledger entries' keys make it idempotent)."""
        if merged_id == survivor_id:
            return 0
        conn = self.uow.conn
        moved = await PointsService(self.uow, self.settings, self.now).merge(merged_id, survivor_id)
        orders = OrderRepository(conn)
        await orders.move_orders(merged_id, survivor_id)
        await orders.move_aftersales(merged_id, survivor_id)
        gifts = GiftRepository(conn)
        await gifts.move_giver(merged_id, survivor_id)
        await gifts.move_recipient(merged_id, survivor_id)
        await CouponRepository(conn).move(merged_id, survivor_id)
        await CheckInRepository(conn).move(merged_id, survivor_id)
        await RewardRepository(conn).move(merged_id, survivor_id)
        affiliates = AffiliateRepository(conn)
        await affiliates.move_buyer(merged_id, survivor_id)
        await affiliates.move_sharer(merged_id, survivor_id)
        await TierRepository(conn).forget(merged_id)
        await TierService(self.uow, self.settings, self.now).on_spend_changed(survivor_id)
        return moved
