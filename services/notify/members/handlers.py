"""Keep notify's projection of member channels from identity's events and the members' own pushes.

Identity owns members; notify keeps what channel choice needs (member → openid per app, follows
the service account or not, an open customer-service window) so choosing needs no synchronous call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.notify.members.repository import MemberRepository, WindowRepository
from shared.bus.consumer import EventContext
from shared.events import FollowChanged, MemberLinked, MemberMerged, MemberRegistered, WeChatPushReceived

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

# What opens the 48-hour customer-service window and how many messages it allows
# (research/shop.md §4.4): a message from the user 5 in 48 h; a menu click, follow or scan 3 in a
# minute; a mini-program user entering the customer-service session 2 in a minute.
_MESSAGE = (48 * 3600.0, 5)
_ACTION = (60.0, 3)
WINDOW_OPENERS: dict[str, tuple[float, int]] = {
    **{f"wechat.oa.{n}": _MESSAGE for n in ("text", "image", "voice", "video", "shortvideo", "location", "link")},
    **{f"wechat.oa.{n}": _ACTION for n in ("click", "scancode_push", "scancode_waitmsg", "subscribe", "scan")},
    **{f"wechat.mp.{n}": _MESSAGE for n in ("text", "image", "miniprogrampage")},
    "wechat.mp.user_enter_tempsession": (60.0, 2),
}


async def on_member_registered(event: MemberRegistered, ctx: EventContext[NotifyDeps]) -> None:
    await MemberRepository(ctx.uow.conn).upsert_identity(event.appid, event.openid, event.member_id, event.app_kind)


async def on_member_linked(event: MemberLinked, ctx: EventContext[NotifyDeps]) -> None:
    await MemberRepository(ctx.uow.conn).upsert_identity(event.appid, event.openid, event.member_id, event.app_kind)


async def on_member_merged(event: MemberMerged, ctx: EventContext[NotifyDeps]) -> None:
    await MemberRepository(ctx.uow.conn).merge(event.survivor_id, event.merged_id)


async def on_follow_changed(event: FollowChanged, ctx: EventContext[NotifyDeps]) -> None:
    await MemberRepository(ctx.uow.conn).set_following(event.appid, event.openid, event.member_id, event.subscribed)
    if not event.subscribed:
        await WindowRepository(ctx.uow.conn).close(event.appid, event.openid)


async def on_window_push(event: WeChatPushReceived, ctx: EventContext[NotifyDeps]) -> None:
    """A member's own interaction opens (or extends) the customer-service window."""
    if not event.openid:
        return
    seconds, count = WINDOW_OPENERS[ctx.envelope.type]
    await WindowRepository(ctx.uow.conn).open(event.appid, event.openid, event.create_time, seconds, count)


async def on_unsubscribe_push(event: WeChatPushReceived, ctx: EventContext[NotifyDeps]) -> None:
    """Unfollowing closes the window at once (identity's follow event may come later)."""
    if event.openid:
        await MemberRepository(ctx.uow.conn).not_following(event.appid, event.openid)
        await WindowRepository(ctx.uow.conn).close(event.appid, event.openid)
