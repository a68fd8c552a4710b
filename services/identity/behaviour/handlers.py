"""commerce's order and gift events feed the profile counters that the buyer and gift rule tags read;
its tier changes become the member's tier tag.

Each runs in its event's inbox unit of work: the same event delivered twice counts once. An event
about a member identity does not know (never one of its ids) changes nothing and is not retried:
no later delivery would make it known.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from services.identity.behaviour.service import BehaviourService
from shared.bus.consumer import EventContext
from shared.errors import NotFound
from shared.events.commerce import GiftAccepted, GiftSent, OrderPaid, TierChanged
from shared.observability import get_logger

if TYPE_CHECKING:
    from services.identity.deps import IdentityDeps

log = get_logger(__name__)


def _member(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


async def on_order_paid(event: OrderPaid, ctx: EventContext[IdentityDeps]) -> None:
    """A paid order (a gift's too: the giver paid) counts toward buyer and frequent_buyer."""
    await _record(ctx, event.member_id, "order", amount_fen=event.paid_fen, at=event.paid_at)


async def on_gift_sent(event: GiftSent, ctx: EventContext[IdentityDeps]) -> None:
    await _record(ctx, event.giver_member_id, "giver")


async def on_gift_accepted(event: GiftAccepted, ctx: EventContext[IdentityDeps]) -> None:
    await _record(ctx, event.recipient_member_id, "receiver")


async def _record(
    ctx: EventContext[IdentityDeps],
    member: str | None,
    what: Literal["order", "giver", "receiver", "tier"],
    *,
    amount_fen: int = 0,
    at: datetime | None = None,
    tier: str = "",
) -> None:
    member_id = _member(member)
    if member_id is None:
        log.info("identity.commerce_event_without_member", what=what)
        return
    service = BehaviourService(ctx.uow)
    try:
        if what == "order":
            assert at is not None
            await service.record_order(member_id, amount_fen=amount_fen, at=at)
        elif what == "tier":
            assert at is not None
            await service.record_tier(member_id, tier, decided_at=at)
        else:
            await service.record_gift(member_id, role=what)
    except NotFound:
        log.warning("identity.commerce_event_for_unknown_member", what=what, member_id=str(member_id))


async def on_tier_changed(event: TierChanged, ctx: EventContext[IdentityDeps]) -> None:
    """The member's tier becomes their one ``tier_<name>`` tag: segments and conditional menus use it."""
    await _record(ctx, event.member_id, "tier", tier=event.new_tier, at=ctx.envelope.occurred_at)
