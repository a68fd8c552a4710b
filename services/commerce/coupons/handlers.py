"""The shop's user-coupon pushes: a coupon used on an order, given back (unuse)."""

from __future__ import annotations

from services.commerce.coupons.service import CouponService
from services.commerce.deps import CommerceDeps
from shared.bus.consumer import EventContext, PoisonMessage, Prefetching
from shared.events import WeChatPushReceived
from shared.wechat.apps import AppKind
from shared.wechat.crypto import MalformedPush
from shared.wechat.push import ShopCouponEvent, parse_push


def _coupon_push(event: WeChatPushReceived) -> tuple[str, str]:
    try:
        push = parse_push(event.payload, AppKind.SHOP)
    except MalformedPush as exc:
        raise PoisonMessage(str(exc)) from None
    info = push.info if isinstance(push, ShopCouponEvent) else None
    coupon_id, user_coupon_id = (info.coupon_id, info.user_coupon_id) if info else (None, None)
    if not coupon_id or not user_coupon_id or not coupon_id.isdigit() or not user_coupon_id.isdigit():
        raise PoisonMessage(f"{event.name} carries no coupon_id / user_coupon_id")
    return coupon_id, user_coupon_id


async def _member_of(event: WeChatPushReceived, deps: CommerceDeps) -> str | None:
    _coupon_push(event)  # malformed pushes are dead-lettered before any call
    if not event.openid:
        raise PoisonMessage(f"{event.name} names no user")
    return await deps.identity.known_member(event.appid, event.openid)


async def _use(event: WeChatPushReceived, ctx: EventContext[CommerceDeps]) -> None:
    member_id: str | None = ctx.prefetched
    if member_id is None:
        return  # a shopper identity does not know has no Siyu coupons
    coupon_id, user_coupon_id = _coupon_push(event)
    await CouponService(ctx.uow, ctx.deps.settings, ctx.deps.clock()).record_use(
        member_id, coupon_id, user_coupon_id, None
    )


async def _unuse(event: WeChatPushReceived, ctx: EventContext[CommerceDeps]) -> None:
    _, user_coupon_id = _coupon_push(event)
    await CouponService(ctx.uow, ctx.deps.settings, ctx.deps.clock()).record_unuse(user_coupon_id)


on_coupon_used = Prefetching(fetch=_member_of, apply=_use)


async def on_coupon_unused(event: WeChatPushReceived, ctx: EventContext[CommerceDeps]) -> None:
    await _unuse(event, ctx)
