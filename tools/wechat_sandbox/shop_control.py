"""The WeChat Shop on the control side: play orders, gifts and after-sales through their life.

Each change is made first (so ``/channels/ec/order/get`` shows it at once) and then pushed to the
shop app's callback URL the way WeChat Shop pushes it: safe mode, JSON, ids only
(research/shop.md §1.6). ``push`` picks the delivery: ``once`` (default), ``twice`` (WeChat's
re-delivery: the identical bytes again) or ``none`` (the event is lost; the state changes anyway).
A push is sent once, without the Shop retry schedule (``POST /sandbox/shop/push`` plays that).
Rules live in ``shop_state.py``; a change WeChat Shop would not make answers 409.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, HTTPException, status
from pydantic import Field

from shared.wechat.apps import AppKind, WeChatApp
from tools.wechat_sandbox.api import StateDep
from tools.wechat_sandbox.control import PusherDep, _Body, _user
from tools.wechat_sandbox.push import CallbackPusher
from tools.wechat_sandbox.shop import _first, shop_envelope
from tools.wechat_sandbox.shop_state import AfterSale, ShopBook, ShopError, ShopEvent, ShopOrder
from tools.wechat_sandbox.state import SandboxState

router = APIRouter(prefix="/sandbox/shop", tags=["Sandbox control"])

Delivery = Literal["once", "twice", "none"]
_COPIES = {"once": 1, "twice": 2, "none": 0}
_ID = r"^[0-9]{1,20}$"
_T = TypeVar("_T")


class _Pushed(_Body):
    push: Delivery = Field(default="once", description="once; twice = WeChat re-delivers the same push; none = lost")


class OrderItem(_Body):
    product_id: str = Field(pattern=_ID)
    sku_id: str = Field(pattern=_ID)
    count: int = Field(default=1, ge=1, le=10_000)


class NewOrder(_Pushed):
    user_id: str = Field(description="the buyer, or the giver of a gift")
    items: list[OrderItem] = Field(min_length=1, max_length=50)
    gift: bool = Field(default=False, description="a gift (送礼物): one item, paid by the giver, waits for a recipient")
    sharer_user_id: str | None = Field(default=None, description="the sharer (分享员) the order is attributed to")
    appid: str | None = Field(default=None, description="a shop app; the first shop in the apps file by default")


class ShipItem(_Body):
    sku_id: str = Field(pattern=_ID)
    count: int = Field(ge=1, le=10_000)


class OrderAction(_Pushed):
    items: list[ShipItem] | None = Field(
        default=None, max_length=50, description="ship only: what this parcel holds (everything left by default)"
    )


class GiftAccept(_Pushed):
    user_id: str = Field(description="the recipient")
    sku_id: str | None = Field(default=None, pattern=_ID, description="swap to another SKU of the same price")


class NewAfterSale(_Pushed):
    sku_id: str = Field(pattern=_ID)
    count: int = Field(ge=1, le=10_000)
    type: Literal["REFUND", "RETURN"]


# -- helpers ------------------------------------------------------------------------------------


def _shops(state: SandboxState) -> list[tuple[WeChatApp, ShopBook]]:
    return [(app, state.shop(app.appid)) for app in state.apps.of_kind(AppKind.SHOP)]


def _find(
    state: SandboxState, what: str, key: str, records: Callable[[ShopBook], dict[str, _T]]
) -> tuple[WeChatApp, ShopBook, _T]:
    """The shop holding an order / gift / after-sale (ids are unique across shops), or 404."""
    for app, book in _shops(state):
        found = records(book).get(key)
        if found is not None:
            return app, book, found
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} {key}")


def _order(state: SandboxState, order_id: str) -> tuple[WeChatApp, ShopBook, ShopOrder]:
    return _find(state, "order", order_id, lambda book: book.orders)


def _gift(state: SandboxState, present_order_id: str) -> tuple[WeChatApp, ShopBook, ShopOrder]:
    return _find(state, "gift", present_order_id, lambda book: book.presents)


def _aftersale(state: SandboxState, after_sale_order_id: str) -> tuple[WeChatApp, ShopBook, AfterSale]:
    return _find(state, "after-sale", after_sale_order_id, lambda book: book.aftersales)


def _conflict(exc: ShopError) -> HTTPException:
    return HTTPException(exc.status_code, str(exc))


async def deliver(
    state: SandboxState, pusher: CallbackPusher, shop: WeChatApp, events: list[ShopEvent], mode: Delivery
) -> list[dict[str, Any]]:
    """Push each event ``mode`` times; answer ``[{"event", "status", "body", "error"?}]`` per delivery."""
    out: list[dict[str, Any]] = []
    for event in events:
        if not _COPIES[mode]:
            continue
        payload = shop_envelope(state, shop, event.user.openids[shop.appid], event.name) | event.body
        prepared = pusher.prepare(shop, payload)
        for _ in range(_COPIES[mode]):
            outcome = await pusher.send(prepared)
            entry: dict[str, Any] = {"event": event.name, "status": outcome.status, "body": outcome.body}
            if outcome.error:
                entry["error"] = outcome.error
            out.append(entry)
    return out


def _order_answer(order: ShopOrder, pushed: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"order_id": order.order_id, "status": order.status}
    if order.present_order_id is not None:
        out["present_order_id"] = order.present_order_id
    out["push"] = pushed
    return out


def _aftersale_answer(aftersale: AfterSale, pushed: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "after_sale_order_id": aftersale.after_sale_order_id,
        "order_id": aftersale.order.order_id,
        "status": aftersale.status,
        "order_status": aftersale.order.status,
        "push": pushed,
    }


# -- catalog ------------------------------------------------------------------------------------


@router.get("/products")
async def products(state: StateDep, appid: str | None = None) -> list[dict[str, Any]]:
    """The shop's catalog: ``[{"product_id", "title", "skus": [{"sku_id", "sale_price" (fen),
    "market_price", "stock_num", "attrs": [{"attr_key", "attr_value"}]}]}]``. The second product has
    two SKUs of the same price (a gift recipient may swap between them) and a dearer third."""
    shop = _first(state, AppKind.SHOP, appid)
    return [p.summary() for p in state.shop(shop.appid).products.values()]


# -- orders -------------------------------------------------------------------------------------


@router.post("/orders", status_code=status.HTTP_201_CREATED)
async def create_order(state: StateDep, pusher: PusherDep, body: NewOrder) -> dict[str, Any]:
    """Place an order (status 10) and push ``channels_ec_order_new``. Stock is taken now and given
    back on cancel. ``gift: true`` makes a gift order with a ``present_order_id``; it is paid by the
    giver and then waits (status 12) for a recipient. 409 for no stock or a gift of more than one item."""
    app = _first(state, AppKind.SHOP, body.appid)
    buyer = _user(state, body.user_id)
    sharer = _user(state, body.sharer_user_id) if body.sharer_user_id else None
    items = [(i.product_id, i.sku_id, i.count) for i in body.items]
    try:
        order, events = state.shop(app.appid).create_order(buyer, items, gift=body.gift, sharer=sharer)
    except ShopError as exc:
        raise _conflict(exc) from None
    return _order_answer(order, await deliver(state, pusher, app, events, body.push))


@router.get("/orders/{order_id}")
async def get_order(state: StateDep, order_id: str) -> dict[str, Any]:
    """The order exactly as ``/channels/ec/order/get`` shows it now."""
    _, book, order = _order(state, order_id)
    return book.render_order(order)


@router.post("/orders/{order_id}/aftersales", status_code=status.HTTP_201_CREATED)
async def open_aftersale(state: StateDep, pusher: PusherDep, order_id: str, body: NewAfterSale) -> dict[str, Any]:
    """The order's owner (a gift's recipient) asks for ``REFUND`` or ``RETURN`` of ``count`` of a SKU
    (also on a settled order) → ``MERCHANT_PROCESSING``, pushed as ``channels_ec_aftersale_update``."""
    app, book, order = _order(state, order_id)
    try:
        aftersale, events = book.open_aftersale(order, body.sku_id, body.count, body.type)
    except ShopError as exc:
        raise _conflict(exc) from None
    return _aftersale_answer(aftersale, await deliver(state, pusher, app, events, body.push))


@router.post("/orders/{order_id}/{action}")
async def order_action(
    state: StateDep, pusher: PusherDep, order_id: str, action: str, body: OrderAction | None = None
) -> dict[str, Any]:
    """``pay`` (10 → 20, a gift 10 → 12), ``ship`` (20/21 → 21 or 30; ``items`` for a partial
    parcel), ``confirm`` (30 → 100), ``settle`` (100, once: WeChat's settlement after the after-sale
    window), ``cancel`` (10 → 250, stock back). Each pushes its ``channels_ec_order_*`` event; an
    illegal move answers 409 and changes nothing."""
    body = body or OrderAction()
    app, book, order = _order(state, order_id)
    if body.items is not None and action != "ship":
        raise HTTPException(422, "items go with ship only")
    try:
        if action == "pay":
            events = book.pay(order)
        elif action == "ship":
            parcel = [(i.sku_id, i.count) for i in body.items] if body.items is not None else None
            events = book.ship(order, parcel)
        elif action == "confirm":
            events = book.confirm(order)
        elif action == "settle":
            events = book.settle(order)
        elif action == "cancel":
            events = book.cancel(order)
        else:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no order action {action}: pay, ship, confirm, settle, cancel"
            )
    except ShopError as exc:
        raise _conflict(exc) from None
    return _order_answer(order, await deliver(state, pusher, app, events, body.push))


# -- gifts --------------------------------------------------------------------------------------


@router.post("/gifts/{present_order_id}/accept")
async def accept_gift(state: StateDep, pusher: PusherDep, present_order_id: str, body: GiftAccept) -> dict[str, Any]:
    """The recipient accepts (确认收下), optionally swapping to another SKU of the same product at the
    same price (another price → 409): the order becomes theirs (openid, unionid, address), 12 → 20,
    pushed as ``channels_ec_order_wait_shipping``. 409 once accepted, expired, or by the giver."""
    app, book, order = _gift(state, present_order_id)
    recipient = _user(state, body.user_id)
    try:
        events = book.accept_gift(order, recipient, body.sku_id)
    except ShopError as exc:
        raise _conflict(exc) from None
    return _order_answer(order, await deliver(state, pusher, app, events, body.push))


@router.post("/gifts/{present_order_id}/expire")
async def expire_gift(
    state: StateDep, pusher: PusherDep, present_order_id: str, body: _Pushed | None = None
) -> dict[str, Any]:
    """The 24 h timeout: the waiting gift is cancelled (12 → 250, ``cancel_type`` 2) and refunded to
    the giver; stock comes back. 409 unless the gift is waiting."""
    body = body or _Pushed()
    app, book, order = _gift(state, present_order_id)
    try:
        events = book.expire_gift(order)
    except ShopError as exc:
        raise _conflict(exc) from None
    return _order_answer(order, await deliver(state, pusher, app, events, body.push))


# -- after-sales --------------------------------------------------------------------------------


@router.get("/aftersales/{after_sale_order_id}")
async def get_aftersale(state: StateDep, after_sale_order_id: str) -> dict[str, Any]:
    """The after-sale as ``/channels/ec/aftersale/getaftersaleorder`` shows it."""
    _, book, aftersale = _aftersale(state, after_sale_order_id)
    return book.render_aftersale(aftersale)


@router.post("/aftersales/{after_sale_order_id}/{action}")
async def close_aftersale(
    state: StateDep, pusher: PusherDep, after_sale_order_id: str, action: str, body: _Pushed | None = None
) -> dict[str, Any]:
    """``refund`` (→ MERCHANT_REFUND_SUCCESS, or MERCHANT_RETURN_SUCCESS for a RETURN: the order's
    refunded count grows; nothing left of an unfinished order → 200 and ``channels_ec_order_cancel``
    with ``cancel_type`` 3), ``reject`` (→ MERCHANT_REJECT_REFUND / _RETURN), ``cancel`` (the user
    withdraws → USER_CANCELD). 409 once closed."""
    body = body or _Pushed()
    if action not in ("refund", "reject", "cancel"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no after-sale action {action}: refund, reject, cancel")
    app, book, aftersale = _aftersale(state, after_sale_order_id)
    try:
        events = book.close_aftersale(aftersale, action)
    except ShopError as exc:
        raise _conflict(exc) from None
    return _aftersale_answer(aftersale, await deliver(state, pusher, app, events, body.push))
