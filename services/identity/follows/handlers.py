"""subscribe, SCAN and unsubscribe on the service account. Each runs in its event's inbox unit of work.

Delivered twice is a no-op twice over: the inbox drops a repeated event id, and the follow log is
unique per WeChat time and change, so the same push under a new event id changes nothing either.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.identity.behaviour.repository import ProfileRepository
from services.identity.deps import IdentityDeps
from services.identity.follows.schemas import Change
from services.identity.follows.service import FollowService
from services.identity.members.repository import person_keys
from services.identity.members.service import MemberService
from services.identity.tags.service import TagService
from shared.bus.consumer import EventContext, PoisonMessage, Prefetching
from shared.events import WeChatPushReceived
from shared.observability import get_logger
from shared.wechat.apps import AppKind
from shared.wechat.errors import InvalidOpenid
from shared.wechat.push import parse_push

log = get_logger(__name__)

CHANGES: dict[str, Change] = {"subscribe": "subscribe", "scan": "scan", "unsubscribe": "unsubscribe"}
SOURCES = {"subscribe": "oa_subscribe", "scan": "oa_scan", "unsubscribe": "oa_unsubscribe"}


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
    push = parse_push(event.payload, AppKind.OFFICIAL_ACCOUNT)
    if not event.openid:
        return  # nothing to attach the follow to; the gateway stored the push for inspection
    change = CHANGES.get(event.name)
    if change is None:
        raise PoisonMessage(f"on_oa_follow does not handle {event.name}")
    scene = getattr(push, "scene", None)
    ticket = getattr(push, "ticket", None)
    at = datetime.fromtimestamp(event.create_time, UTC)
    unionid: str | None = ctx.prefetched
    uow, event_id = ctx.uow, ctx.envelope.event_id
    members, follows = MemberService(uow), FollowService(uow)
    # The person lock first, before anything is looked up: a subscribe and the unsubscribe after it,
    # handled at once, take turns here and the second sees what the first wrote.
    await members.locks.lock(person_keys(event.appid, event.openid, unionid))
    if change == "unsubscribe" and await members.members.identity(event.appid, event.openid) is None:
        # Nobody known (yet): someone who followed before Siyu existed, or whose subscribe is still
        # on its way. Logged with its time, so a subscribe handled later knows it was undone.
        await follows.record_unknown(
            appid=event.appid, openid=event.openid, change=change, at=at, source_event_id=event_id
        )
        log.info("identity.unsubscribe_of_unknown", appid=event.appid)
        return
    resolution = await members.resolve_or_create(
        appid=event.appid,
        app_kind=AppKind.OFFICIAL_ACCOUNT.value,
        openid=event.openid,
        unionid=unionid,
        source=SOURCES[change],
        scene=scene,
        source_event_id=event_id,
        at=at,
    )
    await follows.record(
        resolution.member_id,
        appid=event.appid,
        openid=event.openid,
        change=change,
        scene=scene,
        ticket=ticket,
        at=at,
        source_event_id=event_id,
    )
    if change != "unsubscribe":
        await ProfileRepository(uow.conn).touch_activity(resolution.member_id, at)
    await TagService(uow).refresh_rules([resolution.member_id])


# The WeChat call happens outside the unit of work: no pooled connection waits on WeChat.
on_oa_follow = Prefetching(fetch=fetch_unionid, apply=apply_oa_follow)
