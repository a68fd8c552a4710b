"""Identity's periodic jobs (``background=[...]`` in app.py): the rule sweep and WeChat tag mirror,
and retention.

Every replica runs them. The rule sweep takes turns page by page (a transaction-scoped advisory
lock, tried without waiting, inside each page's short transaction); the tag mirror through its lease
(wechat_sync/service.py). Both are idempotent, so a page done twice is harmless.
"""

from __future__ import annotations

import uuid

from services.identity.deps import IdentityDeps
from services.identity.members.repository import PersonLocks
from services.identity.tags.service import TagService
from services.identity.wechat_sync.service import SyncBusy, WeChatMirror
from shared.db import delete_in_batches
from shared.observability import get_logger
from shared.periodic import run_every
from shared.wechat.apps import AppKind

log = get_logger(__name__)

LOCK_KEY = 0x5159_0001  # "identity rule sweep": any constant shared by the replicas
PAGE = 5000

# Retention (README.md, "Retention"). Both predicates are served by an index (migration 0004).
FOLLOW_EVENTS_OLDER_THAN = "occurred_at < now() - make_interval(days => $1)"
BEHAVIOUR_EVENTS_OLDER_THAN = "occurred_at < now() - make_interval(days => $1)"
SYNC_ATTEMPTS_DONE_BEFORE = "state = 'done' AND done_at < now() - interval '7 days'"


async def refresh_all_rules(deps: IdentityDeps) -> int:
    """The rule sweep over every live member, one set-based statement per page of ``PAGE``; how many
    members' rule tags changed. A replica that finds a page locked leaves the round to its holder."""
    after: uuid.UUID | None = None
    changed = 0
    while True:
        async with deps.db.unit_of_work() as uow:
            if not await PersonLocks(uow.conn).try_lock(LOCK_KEY):
                return changed
            seen, last, n = await TagService(uow).refresh_page(after=after, limit=PAGE)
        changed += n
        if seen < PAGE or last is None:
            return changed
        after = last


async def sync_wechat_tags(deps: IdentityDeps) -> None:
    for app in deps.apps.of_kind(AppKind.OFFICIAL_ACCOUNT):
        try:
            await WeChatMirror(deps).sync_tags(app.appid)
        except SyncBusy:
            log.info("identity.tag_sync_skipped", appid=app.appid, reason="another run holds the lease")


async def prune(deps: IdentityDeps) -> dict[str, int]:
    settings = deps.settings
    counts = {"follow_events": 0, "behaviour_events": 0, "sync_attempts": 0}
    if settings.follow_events_retention_days:
        counts["follow_events"] = await delete_in_batches(
            deps.db, "follow_events", FOLLOW_EVENTS_OLDER_THAN, settings.follow_events_retention_days
        )
    if settings.behaviour_events_retention_days:
        counts["behaviour_events"] = await delete_in_batches(
            deps.db, "behaviour_events", BEHAVIOUR_EVENTS_OLDER_THAN, settings.behaviour_events_retention_days
        )
    counts["sync_attempts"] = await delete_in_batches(deps.db, "wechat_sync_attempts", SYNC_ATTEMPTS_DONE_BEFORE)
    return counts


async def run_schedule(deps: IdentityDeps) -> None:
    interval = deps.settings.schedule_interval_seconds
    if interval <= 0:
        return

    async def once() -> dict[str, int]:
        changed = await refresh_all_rules(deps)
        await sync_wechat_tags(deps)  # WeChat down or a quota: the next round tries again
        return {"rule_tag_changes": changed}

    await run_every(interval, once, "identity.schedule", wait_first=True)


async def run_retention(deps: IdentityDeps) -> None:
    interval = deps.settings.retention_interval_seconds
    if interval <= 0:
        return
    await run_every(interval, lambda: prune(deps), "identity.retention", wait_first=True)
