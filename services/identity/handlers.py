"""Identity's event handlers. Each runs inside the inbox transaction of its event.

A handler delivered twice is a no-op twice over: the inbox drops a repeated event id, and every
state change here is idempotent on its own (the follow log is unique per WeChat time and change,
a link or merge that already happened finds nothing left to do).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from services.identity.crypto import DataVault
from services.identity.repository import MemberRepository
from services.identity.service import IdentityService
from shared.bus.consumer import EventContext, PoisonMessage, Prefetching
from shared.events import WeChatPushReceived
from shared.observability import get_logger
from shared.wechat.apps import AppKind, WeChatApps
from shared.wechat.client import WeChatClient
from shared.wechat.errors import InvalidOpenid
from shared.wechat.push import parse_push

log = get_logger(__name__)


@dataclass
class IdentityDeps:
    wechat: WeChatClient
    apps: WeChatApps
    vault: DataVault

    async def aclose(self) -> None:
        await self.wechat.aclose()


async def publish_all(ctx: EventContext[IdentityDeps], service: IdentityService) -> None:
    for event in service.drain_events():
        await ctx.publish(event)


async def fetch_unionid(event: WeChatPushReceived, deps: IdentityDeps) -> str | None:
    """Before the transaction: user/info is the only place a follower's unionid comes from.

    It fails for someone who unfollowed again before we got here: go on without the unionid, a
    later event brings it. An unsubscribe needs none.
    """
    if event.name not in ("subscribe", "scan") or not event.openid:
        return None
    try:
        return (await deps.wechat.user_info(event.appid, event.openid)).unionid
    except InvalidOpenid:
        log.info("identity.user_info_unavailable", appid=event.appid)
        return None


async def apply_oa_follow(event: WeChatPushReceived, ctx: EventContext[IdentityDeps]) -> None:
    """subscribe, SCAN and unsubscribe on the service account: resolve the member, record the follow."""
    push = parse_push(event.payload, AppKind.OFFICIAL_ACCOUNT)
    if not event.openid:
        return  # nothing to attach the follow to; the gateway stored the push for inspection
    change = {"subscribe": "subscribe", "scan": "scan", "unsubscribe": "unsubscribe"}.get(event.name)
    if change is None:
        raise PoisonMessage(f"on_oa_follow does not handle {event.name}")
    scene = getattr(push, "scene", None)
    ticket = getattr(push, "ticket", None)
    at = datetime.fromtimestamp(event.create_time, UTC)
    repo = MemberRepository(ctx.session)
    unionid: str | None = ctx.prefetched
    if change == "unsubscribe" and await repo.identity(event.appid, event.openid) is None:
        # Someone who followed before Siyu existed leaves: not a member to create (and welcome).
        log.info("identity.unsubscribe_of_unknown", appid=event.appid)
        return
    service = IdentityService(repo)
    resolution = await service.resolve_or_create(
        appid=event.appid,
        app_kind=AppKind.OFFICIAL_ACCOUNT.value,
        openid=event.openid,
        unionid=unionid,
        source={"subscribe": "oa_subscribe", "scan": "oa_scan"}.get(change, "oa_unsubscribe"),
        scene=scene,
        source_event_id=ctx.envelope.event_id,
        at=at,
    )
    await service.record_follow(
        resolution.member,
        appid=event.appid,
        openid=event.openid,
        change=change,
        scene=scene,
        ticket=ticket,
        at=at,
        source_event_id=ctx.envelope.event_id,
    )
    if change != "unsubscribe":
        await service.touch_activity(resolution.member, at)
    await publish_all(ctx, service)


# The WeChat call happens outside the unit of work: no pooled connection waits on WeChat.
on_oa_follow = Prefetching(fetch=fetch_unionid, apply=apply_oa_follow)
