"""commerce's retention: the tables that grow with traffic but are not business history are pruned
past their horizon (README.md, "Retention", says each horizon and why; the order mirror, its status
history, the ledger, redemptions, coupons and gifts are history and are kept).

One replica prunes at a time (``Database.take_turns``); every delete runs in short batches through an
index (``shared.db.delete_in_batches``; the predicates are in the domains' repositories). Times come
from ``deps.clock``.
"""

from __future__ import annotations

from datetime import timedelta

from services.commerce.checkins.repository import prune_checkins
from services.commerce.checkins.service import beijing_day
from services.commerce.checkout.repository import prune_reservations
from services.commerce.deps import CommerceDeps
from shared.periodic import run_every

JOB = "commerce.retention"


async def prune_once(deps: CommerceDeps) -> dict[str, int]:
    """One round of every prune; how many rows each removed (all 0 when another replica has the turn)."""
    settings, now = deps.settings, deps.clock()
    counts = {"vip_discount_reservations": 0, "checkins": 0}
    async with deps.db.take_turns(JOB) as mine:
        if not mine:
            return counts
        if settings.vip_reservation_retention_days:
            before = now - timedelta(days=settings.vip_reservation_retention_days)
            counts["vip_discount_reservations"] = await prune_reservations(deps.db, before)
        if settings.checkins_retention_days:
            first_day = beijing_day(now) - timedelta(days=settings.checkins_retention_days)
            counts["checkins"] = await prune_checkins(deps.db, first_day)
    return counts


async def retention_forever(deps: CommerceDeps) -> None:
    interval = deps.settings.retention_interval_seconds
    if interval > 0:
        await run_every(interval, lambda: prune_once(deps), "commerce.retention", wait_first=True)
