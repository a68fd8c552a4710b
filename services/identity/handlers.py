"""Identity's event handlers. Each runs inside the inbox transaction of its event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from services.identity.repository import MemberRepository
from services.identity.service import IdentityService
from shared.bus.consumer import EventContext
from shared.events import FollowChanged, MemberRegistered, WeChatPushReceived
from shared.wechat.apps import AppKind, WeChatApps
from shared.wechat.client import WeChatClient
from shared.wechat.push import parse_push


@dataclass
class IdentityDeps:
    wechat: WeChatClient
    apps: WeChatApps

    async def aclose(self) -> None:
        await self.wechat.aclose()


async def on_oa_follow(event: WeChatPushReceived, ctx: EventContext[IdentityDeps]) -> None:
    """subscribe, SCAN and unsubscribe on the service account: resolve the member, record the follow."""
    push = parse_push(event.payload, AppKind.OFFICIAL_ACCOUNT)
    assert event.openid
    subscribed = event.name != "unsubscribe"
    scene = getattr(push, "scene", None)
    ticket = getattr(push, "ticket", None)
    unionid = None
    if subscribed:
        # user/info is the only place a follower's unionid comes from; it fails for non-followers.
        info = await ctx.deps.wechat.user_info(event.appid, event.openid)
        unionid = info.unionid
    service = IdentityService(MemberRepository(ctx.session))
    resolution = await service.resolve_or_create(
        appid=event.appid,
        app_kind=AppKind.OFFICIAL_ACCOUNT.value,
        openid=event.openid,
        unionid=unionid,
        source="oa_subscribe" if subscribed else "oa_unsubscribe",
        scene=scene,
    )
    member = resolution.member
    if resolution.created:
        await ctx.publish(
            MemberRegistered(
                member_id=str(member.id),
                appid=event.appid,
                app_kind=AppKind.OFFICIAL_ACCOUNT.value,
                openid=event.openid,
                unionid=unionid,
                source="oa_subscribe",
                scene=scene,
            )
        )
    _, changed = await service.record_follow(
        member,
        appid=event.appid,
        openid=event.openid,
        subscribed=subscribed,
        scene=scene,
        ticket=ticket,
        at=datetime.fromtimestamp(event.create_time, UTC),
    )
    if changed or event.name == "scan":
        await ctx.publish(
            FollowChanged(
                member_id=str(member.id),
                appid=event.appid,
                openid=event.openid,
                subscribed=subscribed,
                scene=scene,
                change="scan" if event.name == "scan" else ("subscribe" if subscribed else "unsubscribe"),
            )
        )
