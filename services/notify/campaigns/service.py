"""Campaigns: create, preview (audience and channel counts, nothing spent), start, cancel, fan out."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from services.notify.campaigns.repository import CampaignRepository
from services.notify.campaigns.schemas import CampaignCreate
from services.notify.limits.repository import CapRepository
from services.notify.limits.service import Caps, CapService, QuietHours
from services.notify.members.repository import MemberRepository
from services.notify.rules.service import Rendered, Rule, render
from services.notify.sends.repository import SendRepository
from services.notify.sends.service import SendService, choose, template_ids
from services.notify.templates.service import TemplateLibrary
from shared.errors import Conflict, NotFound
from shared.uow import UnitOfWork


def campaign_values(campaign_id: uuid.UUID, message: dict[str, Any], now: datetime) -> dict[str, Any]:
    page = str(message["page"])
    page += ("&" if "?" in page else "?") + f"campaign_id={campaign_id}"
    return {**message, "page": page, "campaign_id": str(campaign_id), "occurred_at": now, "event_id": str(campaign_id)}


class CampaignService:
    def __init__(self, uow: UnitOfWork, rule: Rule, library: TemplateLibrary, quiet: QuietHours, caps: Caps) -> None:
        self.uow = uow
        self.campaigns = CampaignRepository(uow.conn)
        self.rule = rule
        self.library = library
        self.quiet = quiet
        self.caps = caps

    async def create(self, body: CampaignCreate) -> uuid.UUID:
        campaign_id = uuid.uuid4()
        audience = body.audience.model_dump(exclude_none=True)
        await self.campaigns.insert(campaign_id, body.name, audience, body.message.model_dump(), body.kind)
        return campaign_id

    async def get(self, campaign_id: uuid.UUID) -> dict[str, Any]:
        campaign = await self.campaigns.get(campaign_id)
        if campaign is None:
            raise NotFound("no such campaign")
        return campaign

    async def preview(self, member_ids: list[str], now: datetime, counts: tuple[Counter[str], Counter[str]]) -> None:
        """Count, for these members, the channel each would get or why they would be skipped."""
        channels, skipped = counts
        members = MemberRepository(self.uow.conn)
        caps = CapService(CapRepository(self.uow.conn), self.caps)
        ids = template_ids(self.rule, self.library)
        for member_id in member_ids:
            choice = choose(self.rule, await members.channels(member_id, ids), self.library)
            if isinstance(choice, str):
                skipped[choice] += 1
            elif await caps.reached(member_id, now):
                skipped["cap_reached"] += 1
            else:
                channels[choice.channel.value] += 1

    async def start(self, campaign_id: uuid.UUID) -> None:
        await self.get(campaign_id)
        if not await self.campaigns.start(campaign_id):
            raise Conflict("the campaign is over: it cannot be started")

    async def cancel(self, campaign_id: uuid.UUID, now: datetime) -> None:
        await self.get(campaign_id)
        if not await self.campaigns.cancel(campaign_id):
            raise Conflict("the campaign is completed: there is nothing to cancel")
        sends = SendService(self.uow, self.library, self.quiet)
        for send in await SendRepository(self.uow.conn).cancel_campaign(campaign_id, now):
            await sends.release(send)

    async def fan_out(
        self, campaign: dict[str, Any], member_ids: list[str], next_cursor: str | None, now: datetime
    ) -> int:
        """Decide one page of the audience and move the cursor past it, together."""
        campaign_id: uuid.UUID = campaign["id"]
        if not await self.campaigns.advance(campaign_id, next_cursor, next_cursor is None):
            return 0  # cancelled meanwhile
        values = campaign_values(campaign_id, campaign["message"], now)
        rendered = render(self.rule, values)
        sends = SendService(self.uow, self.library, self.quiet)
        decided = 0
        for member_id in member_ids:
            keyed = Rendered(rendered.data, rendered.page, rendered.text, f"campaign:{campaign_id}:{member_id}")
            decision = await sends.decide(self.rule, keyed, member_id, now, campaign_id=campaign_id)
            decided += decision.send_id is not None
        return decided
