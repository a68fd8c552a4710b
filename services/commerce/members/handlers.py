"""identity's events commerce acts on."""

from __future__ import annotations

from services.commerce.coupons.service import CouponService
from services.commerce.deps import CommerceDeps
from services.commerce.members.service import MemberService
from shared.bus.consumer import EventContext
from shared.events import MemberMerged, MemberRegistered


async def on_member_merged(event: MemberMerged, ctx: EventContext[CommerceDeps]) -> None:
    await MemberService(ctx.uow, ctx.deps.settings, ctx.deps.clock()).merge(event.merged_id, event.survivor_id)


async def on_member_registered(event: MemberRegistered, ctx: EventContext[CommerceDeps]) -> None:
    """A new member gets the welcome coupon (once: its claim key is the member)."""
    await CouponService(ctx.uow, ctx.deps.settings, ctx.deps.clock()).issue_welcome(event.member_id)
