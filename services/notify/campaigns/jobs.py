"""Fan a running campaign out to its audience, one page per unit of work, resumable at its cursor.

The audience page is read from identity before the unit of work opens; the page's sends and the
cursor past it are written together, and each send's key is (campaign, member): a replica that
dies after the commit resumes at the next page, one that dies before it redoes the page and the
keys absorb what was already decided. Nobody is messaged twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.notify.campaigns.audience import audience_page
from services.notify.campaigns.repository import CampaignRepository
from services.notify.campaigns.service import CampaignService
from shared.periodic import run_every

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

FANOUT_LEASE_SECONDS = 60.0


async def fan_out_once(deps: NotifyDeps, max_pages: int = 20) -> dict[str, int]:
    decided = 0
    for _ in range(max_pages):
        async with deps.db.connection() as conn:
            campaign = await CampaignRepository(conn).claim_fanout(deps.clock(), FANOUT_LEASE_SECONDS)
        if campaign is None:
            break
        page = await audience_page(deps.identity, campaign["audience"], campaign["cursor"])
        async with deps.db.unit_of_work() as uow:
            service = CampaignService(uow, deps.rules.campaign, deps.library, deps.quiet, deps.caps)
            decided += await service.fan_out(campaign, page.member_ids, page.next_cursor, deps.clock())
    async with deps.db.connection() as conn:
        completed = await CampaignRepository(conn).complete_finished()
    return {"decided": decided, "completed": completed}


async def campaigns_forever(deps: NotifyDeps) -> None:
    await run_every(deps.settings.jobs_poll_seconds, lambda: fan_out_once(deps), "campaigns.fanout")
