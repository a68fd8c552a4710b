"""notify's retention: every table that grows with traffic is pruned past its horizon (README.md,
"Retention", says each horizon and why).

One replica prunes at a time (``Database.take_turns``); every delete runs in short batches through an
index (``shared.db.delete_in_batches``; the predicates are in the domains' repositories). Nothing a
running flow still needs is in reach: a pending or deferred send, a delivery not yet finished, a
waiting reminder, a campaign in progress, this week's caps. A campaign's recap is stored on it before
the first of its sends goes, so ``GET /internal/campaigns/{id}`` answers the same afterwards.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from services.notify.abandoned.repository import prune_abandoned
from services.notify.authorisations.repository import prune_grants, prune_spent_authorisations
from services.notify.campaigns.repository import CampaignRepository
from services.notify.deliveries.repository import prune_deliveries
from services.notify.limits.repository import prune_caps
from services.notify.limits.service import beijing_week
from services.notify.members.repository import prune_windows
from services.notify.sends.repository import SendRepository, prune_sends
from shared.db import Database
from shared.periodic import run_every

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

JOB = "notify.retention"

# Horizons that follow from the rules rather than being a choice (README.md, "Retention").
WINDOW_AFTER_EXPIRY = timedelta(days=1)  # an expired window is dead; a day to look at it
SPENT_AUTHORISATION_AFTER = timedelta(days=30)  # far past the longest a send holds one (next midnight)
ABANDONED_CLOSED_AFTER = timedelta(days=30)  # as long as the inbox de-duplicates a redelivered order event
CAP_WEEKS_KEPT = 2  # this Beijing week (read) and the last (to look at)
FREEZE_PAGE = 100


async def freeze_recaps(db: Database, before: datetime) -> int:
    """Store the recap of every finished campaign whose sends may reach the horizon, before any goes."""
    frozen = 0
    while True:
        async with db.connection() as conn:
            campaigns = await CampaignRepository(conn).unfrozen(before, FREEZE_PAGE)
        for campaign_id in campaigns:
            # One snapshot: the counts stored are the counts of one moment.
            async with db.unit_of_work(isolation="repeatable_read") as uow:
                recap = await SendRepository(uow.conn).campaign_stats(campaign_id)
                frozen += await CampaignRepository(uow.conn).freeze(campaign_id, recap)
        if len(campaigns) < FREEZE_PAGE:
            return frozen


async def prune_once(deps: NotifyDeps) -> dict[str, int]:
    """One round of every prune; how many rows each removed (all 0 when another replica has the turn)."""
    settings, now = deps.settings, deps.clock()
    counts = dict.fromkeys(
        (
            "recaps_frozen",
            "sends",
            "deliveries",
            "service_windows",
            "authorisation_grants",
            "authorisations",
            "marketing_caps",
            "abandoned_orders",
        ),
        0,
    )
    async with deps.db.take_turns(JOB) as mine:
        if not mine:
            return counts
        db = deps.db
        if settings.sends_retention_days:
            before = now - timedelta(days=settings.sends_retention_days)
            counts["recaps_frozen"] = await freeze_recaps(db, before)
            counts["sends"] = await prune_sends(db, before)
        if settings.deliveries_retention_days:
            counts["deliveries"] = await prune_deliveries(db, now - timedelta(days=settings.deliveries_retention_days))
        if settings.grants_retention_days:
            before = now - timedelta(days=settings.grants_retention_days)
            counts["authorisation_grants"] = await prune_grants(db, before)
        counts["service_windows"] = await prune_windows(db, now - WINDOW_AFTER_EXPIRY)
        counts["authorisations"] = await prune_spent_authorisations(db, now - SPENT_AUTHORISATION_AFTER)
        counts["marketing_caps"] = await prune_caps(db, beijing_week(now) - timedelta(weeks=CAP_WEEKS_KEPT - 1))
        counts["abandoned_orders"] = await prune_abandoned(db, now - ABANDONED_CLOSED_AFTER)
    return counts


async def retention_forever(deps: NotifyDeps) -> None:
    interval = deps.settings.retention_interval_seconds
    if interval > 0:
        await run_every(interval, lambda: prune_once(deps), "notify.retention", wait_first=True)
