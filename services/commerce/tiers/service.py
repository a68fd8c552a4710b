"""Tier rules: the tier follows rolling 12-month paid spend (order price minus refunds, a gift counted
for its giver). Up at once when spend crosses a threshold; down only when the tier's period ends
(``COMMERCE_TIER_PERIOD_DAYS`` after it was reached or last confirmed), then to what spend supports."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.commerce.coupons.service import CouponService
from services.commerce.orders.repository import OrderRepository
from services.commerce.settings import CommerceSettings, TierRule
from services.commerce.tiers.repository import TierRepository
from shared.events.commerce import TierChanged
from shared.uow import UnitOfWork

YEAR = timedelta(days=365)


class TierService:
    def __init__(self, uow: UnitOfWork, settings: CommerceSettings, now: datetime) -> None:
        self.uow = uow
        self.repo = TierRepository(uow.conn)
        self.orders = OrderRepository(uow.conn)
        self.settings = settings
        self.now = now

    async def tier_of(self, member_id: str) -> TierRule:
        name = await self.repo.tier_of(member_id)
        return self.settings.tier(name) if name else self.settings.tiers[0]

    async def spend(self, member_id: str) -> int:
        return await self.orders.spend_since(member_id, self.now - YEAR)

    async def on_spend_changed(self, member_id: str) -> TierRule:
        """After a payment or a refund: upgrade at once if spend now reaches a higher tier."""
        row = await self.repo.get_for_update(member_id)
        spend = await self.spend(member_id)
        current = self.settings.tier(row["tier"]) if row else self.settings.tiers[0]
        qualified = self.settings.tier_for_spend(spend)
        period_end = self.now + timedelta(days=self.settings.tier_period_days)
        if self.settings.tier_rank(qualified.name) > self.settings.tier_rank(current.name):
            await self.repo.set(member_id, qualified.name, spend, period_end, self.now)
            await self._announce(member_id, current, qualified, spend)
            return qualified
        await self.repo.set(member_id, current.name, spend, row["period_end"] if row else period_end, self.now)
        return current

    async def end_periods(self, limit: int = 500) -> int:
        """Members whose tier period ended: down to what their spend supports (or kept, if it still
        does), and a new period starts. Returns how many tiers went down."""
        lowered = 0
        period_end = self.now + timedelta(days=self.settings.tier_period_days)
        for member_id in await self.repo.due(self.now, limit):
            row = await self.repo.get_for_update(member_id)
            if row is None:
                continue
            spend = await self.spend(member_id)
            current = self.settings.tier(row["tier"])
            qualified = self.settings.tier_for_spend(spend)
            if self.settings.tier_rank(qualified.name) < self.settings.tier_rank(current.name):
                await self.repo.set(member_id, qualified.name, spend, period_end, self.now)
                await self._announce(member_id, current, qualified, spend)
                lowered += 1
            else:
                await self.repo.set(member_id, current.name, spend, period_end, self.now)
        return lowered

    async def _announce(self, member_id: str, old: TierRule, new: TierRule, spend: int) -> None:
        up = self.settings.tier_rank(new.name) > self.settings.tier_rank(old.name)
        self.uow.publish(
            TierChanged(
                member_id=member_id,
                old_tier=old.name,
                new_tier=new.name,
                direction="up" if up else "down",
                spend_12m_fen=spend,
                multiplier_pct=new.multiplier_pct,
            )
        )
        if up:
            await CouponService(self.uow, self.settings, self.now).issue_tier(member_id, new.name)
