"""Coupon rules. Claim limits are claim keys, unique in the table:

* welcome — ``welcome:<member>``: once per member, when identity registers them;
* tier — ``tier:<member>:<tier>``: once per tier reached;
* abandoned order — ``abandoned:<member>:<period>``: at most one per ``COMMERCE_ABANDONED_COUPON_EVERY_DAYS``
  for an order cancelled unpaid;
* reward — ``reward:<redemption_id>``: the coupon a points-mall redemption bought.

A coupon is used when the shop says so (``channels_ec_user_coupon_use``), matched by the shop
coupon id the rule names (``shop_coupon_id``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from services.commerce.coupons.repository import CouponRepository
from services.commerce.settings import CommerceSettings, CouponRule
from shared.events.commerce import CouponIssued, CouponUsed
from shared.uow import UnitOfWork


class CouponService:
    def __init__(self, uow: UnitOfWork, settings: CommerceSettings, now: datetime) -> None:
        self.uow = uow
        self.repo = CouponRepository(uow.conn)
        self.settings = settings
        self.now = now

    async def issue(
        self,
        member_id: str,
        *,
        kind: str,
        title: str,
        discount_fen: int,
        min_spend_fen: int,
        validity_days: int,
        claim_key: str,
        shop_coupon_id: str | None = None,
        order_id: str | None = None,
    ) -> str | None:
        """The new coupon's id, or None when the claim key was claimed before."""
        coupon_id = f"cp-{uuid.uuid4().hex[:20]}"
        expires_at = self.now + timedelta(days=validity_days)
        fresh = await self.repo.issue(
            coupon_id,
            member_id,
            kind=kind,
            title=title,
            discount_fen=discount_fen,
            min_spend_fen=min_spend_fen,
            claim_key=claim_key,
            shop_coupon_id=shop_coupon_id,
            order_id=order_id,
            at=self.now,
            expires_at=expires_at,
        )
        if not fresh:
            return None
        self.uow.publish(
            CouponIssued(
                member_id=member_id,
                coupon_id=coupon_id,
                title=title,
                kind=kind,
                discount_fen=discount_fen,
                min_spend_fen=min_spend_fen,
                expires_at=expires_at,
                order_id=order_id,
            )
        )
        return coupon_id

    async def _issue_rule(self, member_id: str, kind: str, rule: CouponRule, claim_key: str, **kw: str) -> str | None:
        return await self.issue(
            member_id,
            kind=kind,
            title=rule.title,
            discount_fen=rule.discount_fen,
            min_spend_fen=rule.min_spend_fen,
            validity_days=rule.validity_days,
            claim_key=claim_key,
            shop_coupon_id=rule.shop_coupon_id,
            **kw,
        )

    async def issue_welcome(self, member_id: str) -> str | None:
        return await self._issue_rule(member_id, "welcome", self.settings.welcome_coupon, f"welcome:{member_id}")

    async def issue_tier(self, member_id: str, tier: str) -> str | None:
        return await self._issue_rule(member_id, "tier", self.settings.tier_coupon, f"tier:{member_id}:{tier}")

    async def offer_abandoned(self, member_id: str, order_id: str) -> tuple[asyncpg.Record | None, bool]:
        """The abandoned-order coupon for this order: (its row, issued now). The row an earlier ask
        for the same order got, or None when the member's claim limit for the period is used up."""
        row = await self.repo.for_order(member_id, "abandoned_order", order_id)
        if row is not None:
            return row, False
        if await self.issue_abandoned(member_id, order_id) is None:
            return None, False
        return await self.repo.for_order(member_id, "abandoned_order", order_id), True

    async def issue_abandoned(self, member_id: str, order_id: str) -> str | None:
        period = int(self.now.timestamp()) // (86_400 * self.settings.abandoned_coupon_every_days)
        key = f"abandoned:{member_id}:{period}"
        return await self._issue_rule(
            member_id, "abandoned_order", self.settings.abandoned_coupon, key, order_id=order_id
        )

    async def record_use(
        self, member_id: str, shop_coupon_id: str, user_coupon_id: str, order_id: str | None
    ) -> str | None:
        coupon_id = await self.repo.use(member_id, shop_coupon_id, user_coupon_id, order_id, self.now)
        if coupon_id is not None:
            self.uow.publish(
                CouponUsed(member_id=member_id, coupon_id=coupon_id, shop_coupon_id=shop_coupon_id, order_id=order_id)
            )
        return coupon_id

    async def record_unuse(self, user_coupon_id: str) -> str | None:
        return await self.repo.unuse(user_coupon_id)
