"""Shop order and after-sale pushes. Events carry ids only and statuses lag (research/shop.md §1.1,
§1.6), so every one re-fetches the order (and its after-sales) before the unit of work opens,
resolves the people in it to members through identity, and applies the snapshot."""

from __future__ import annotations

from typing import Any

from services.commerce.deps import CommerceDeps
from services.commerce.identity_client import Source
from services.commerce.orders.schemas import MirroredOrder, OrderSnapshot
from services.commerce.orders.service import OrderService
from shared.bus.consumer import EventContext, PoisonMessage, Prefetching
from shared.events import WeChatPushReceived
from shared.wechat.apps import AppKind
from shared.wechat.client import ShopAfterSale
from shared.wechat.crypto import MalformedPush
from shared.wechat.errors import WeChatAPIError
from shared.wechat.push import ShopAfterSaleEvent, ShopOrderEvent, parse_push

# order/get's "order not exist" and the invalid-argument codes: the id can never be fetched.
_NO_SUCH_ORDER = frozenset({100002, 40097, 10100002, 10100003})


def _shop_push(event: WeChatPushReceived, deps: CommerceDeps) -> Any:
    app = deps.settings.wechat_apps.get(event.appid)
    if app is None or app.kind is not AppKind.SHOP:
        raise PoisonMessage(f"{event.appid} is not one of the brand's shop apps")
    try:
        return parse_push(event.payload, AppKind.SHOP)
    except MalformedPush as exc:
        raise PoisonMessage(str(exc)) from None


async def fetch_snapshot(deps: CommerceDeps, appid: str, order_id: str) -> OrderSnapshot:
    """The order as it is now, its after-sales, and its people as members (no database held)."""
    try:
        raw = await deps.wechat.shop_order_get(appid, order_id)
        order = MirroredOrder.of(raw, appid)
        aftersales: list[ShopAfterSale] = []
        for item in raw.aftersale_detail.get("aftersale_order_list") or []:
            sale_id = item.get("aftersale_order_id") if isinstance(item, dict) else None
            if sale_id is not None:
                aftersales.append(await deps.wechat.shop_aftersale_get(appid, str(sale_id)))
    except WeChatAPIError as exc:
        if exc.errcode in _NO_SUCH_ORDER:
            raise PoisonMessage(f"the shop has no order {order_id} ({exc.errcode})") from None
        raise
    buyer = recipient = None
    recipient_created = False
    if order.buyer_openid:
        source: Source = "gift_giver" if order.is_gift else "shop_order"
        buyer = (await deps.identity.member_for(appid, order.buyer_openid, order.buyer_unionid, source)).member_id
    if order.recipient_openid:
        found = await deps.identity.member_for(appid, order.recipient_openid, order.unionid, "gift_recipient")
        recipient, recipient_created = found.member_id, found.created
    sharer = None
    if order.sharer is not None and order.sharer.openid:
        sharer = await deps.identity.known_member(appid, order.sharer.openid)
    return OrderSnapshot(order, aftersales, buyer, recipient, recipient_created, sharer)


async def _fetch_order(event: WeChatPushReceived, deps: CommerceDeps) -> OrderSnapshot:
    push = _shop_push(event, deps)
    order_id = push.order_id if isinstance(push, ShopOrderEvent | ShopAfterSaleEvent) else None
    if not order_id or not str(order_id).isdigit() or len(str(order_id)) > 32:
        raise PoisonMessage(f"{event.name} carries no usable order_id")
    return await fetch_snapshot(deps, event.appid, str(order_id))


async def _apply(event: WeChatPushReceived, ctx: EventContext[CommerceDeps]) -> None:
    snapshot: OrderSnapshot = ctx.prefetched
    await OrderService(ctx.uow, ctx.deps.settings, ctx.deps.clock()).apply(snapshot, source=event.name)


on_order_event = Prefetching(fetch=_fetch_order, apply=_apply)
"""Every ``channels_ec_order_*`` push and the after-sale pushes: re-fetch, resolve, apply."""
