"""Identity's periodic work: time-based rule tags (new member, lapsed) and the WeChat tag mirror.

Runs in every replica; a transaction-scoped advisory lock per page makes the replicas take turns
instead of doing the same page at once. Both jobs are idempotent, so a page done twice is harmless.
"""

from __future__ import annotations

import uuid

from services.identity.handlers import IdentityDeps
from services.identity.repository import MemberRepository
from services.identity.service import IdentityService
from services.identity.settings import IdentitySettings
from services.identity.wechat_sync import WeChatSync
from shared.app import Runtime
from shared.db import transaction
from shared.observability import get_logger
from shared.periodic import run_every
from shared.wechat.apps import AppKind

log = get_logger(__name__)

LOCK_KEY = 0x5159_0001  # "identity schedule": any constant shared by the replicas
TAG_SYNC_LOCK = LOCK_KEY + 1  # also taken by the operator's POST /internal/wechat/tag-sync
PAGE = 500


async def refresh_all_rules(rt: Runtime) -> int:
    """Re-evaluate rule tags for every member, page by page; returns how many tag sets changed."""
    after: uuid.UUID | None = None
    changed = 0
    while True:
        async with transaction(rt.sessions) as session:
            service = IdentityService(MemberRepository(session))
            if not await service.repo.try_lock(LOCK_KEY):
                return changed  # another replica is on it
            ids = await service.repo.members_for_rule_refresh(after=after, limit=PAGE)
            for member_id in ids:
                await service.refresh_rules(member_id)
            for event in service.drain_events():
                await rt.outbox.add(session, event)
                changed += 1
        if len(ids) < PAGE:
            return changed
        after = ids[-1]


async def sync_wechat_tags(rt: Runtime) -> None:
    deps: IdentityDeps = rt.deps
    for app in rt.settings.wechat_apps.of_kind(AppKind.OFFICIAL_ACCOUNT):
        async with transaction(rt.sessions) as session:
            repo = MemberRepository(session)
            if not await repo.try_lock(TAG_SYNC_LOCK):
                continue
            report = await WeChatSync(repo, deps.wechat).sync_tags(app.appid)
        log.info("identity.tag_sync", appid=app.appid, report=report)


async def run_schedule(rt: Runtime) -> None:
    settings = rt.settings
    interval = settings.schedule_interval_seconds if isinstance(settings, IdentitySettings) else 0
    if interval <= 0:
        return

    async def once() -> dict[str, int]:
        changed = await refresh_all_rules(rt)
        await sync_wechat_tags(rt)  # WeChat down or a quota: the next round tries again
        return {"rule_tag_changes": changed}

    await run_every(interval, once, "identity.schedule", wait_first=True)
