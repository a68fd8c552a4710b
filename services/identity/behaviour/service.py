"""Behaviour, orders and gifts: the profile that rule tags read.

``record_order`` and ``record_gift`` are fed by commerce's ``commerce.order.paid``,
``commerce.gift.sent`` and ``commerce.gift.accepted`` (``handlers.py``, in the event's unit of work).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from services.identity.behaviour.repository import BehaviourRepository, ProfileRepository
from services.identity.members.repository import MemberRepository
from services.identity.tags.service import TagService
from shared.errors import NotFound
from shared.uow import UnitOfWork

BEHAVIOUR_COUNTERS = {
    "product_view": "product_views",
    "add_to_cart": "add_to_carts",
    "share": "shares",
    "article_read": "article_reads",
}


class BehaviourService:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.events = BehaviourRepository(uow.conn)
        self.profiles = ProfileRepository(uow.conn)
        self.members = MemberRepository(uow.conn)
        self.tags = TagService(uow)

    async def _live(self, member_id: uuid.UUID) -> uuid.UUID:
        member = await self.members.live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        return member.id

    async def record_behaviour(self, member_id: uuid.UUID, events: list[dict[str, Any]]) -> tuple[uuid.UUID, int]:
        """Store behaviour events (a retried batch is recognised row by row); (member, new rows)."""
        live = await self._live(member_id)
        # origin = the id the caller addressed, so a batch retried after a merge is still a duplicate.
        fresh = await self.events.add_events(live, member_id, events)
        if fresh:
            counts: dict[str, int] = {}
            for kind in fresh:
                counter = BEHAVIOUR_COUNTERS[kind]
                counts[counter] = counts.get(counter, 0) + 1
            await self.profiles.add_activity(live, counts, max(e["occurred_at"] for e in events))
            await self.tags.refresh_rules([live])
        return live, len(fresh)

    async def record_order(self, member_id: uuid.UUID, *, amount_fen: int, at: datetime) -> None:
        """A paid order (``commerce.order.paid``): feeds buyer / frequent_buyer."""
        live = await self._live(member_id)
        await self.profiles.add_order(live, amount_fen, at)
        await self.tags.refresh_rules([live])

    async def record_tier(self, member_id: uuid.UUID, tier: str, *, decided_at: datetime) -> None:
        """commerce's tier (``commerce.tier.changed``): the member's one ``tier_<name>`` tag."""
        await self.tags.set_tier(await self._live(member_id), tier, decided_at)

    async def record_gift(self, member_id: uuid.UUID, *, role: Literal["giver", "receiver"]) -> None:
        """A gift sent or received (commerce's gift events): feeds gift_giver / gift_receiver."""
        live = await self._live(member_id)
        await self.profiles.add_gift(live, sent=int(role == "giver"), received=int(role == "receiver"))
        await self.tags.refresh_rules([live])
