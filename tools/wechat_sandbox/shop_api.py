"""WeChat Shop's ``/channels/ec/...`` API, answered from the sandbox's shop state.

Paths and bodies per research/shop.md §1.2–§1.5 and §2.2 (WxJava, SKIT samples, official docs). All
are POST with a JSON body and a shop app's ``access_token`` (the usual 41001/40001/42001; another
kind of app's token → 48001). ``order/get`` always shows the current state, whatever was pushed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from shared.wechat.apps import AppKind
from tools.wechat_sandbox.api import StateDep, app_of_token, json_body, json_doc
from tools.wechat_sandbox.errors import WeChatApiError
from tools.wechat_sandbox.shop_state import (
    AFTERSALE_LIST_MAX_WINDOW,
    AFTERSALE_LIST_PAGE,
    INVALID_ARGS,
    INVALID_ARGS_MSG,
    ORDER_LIST_DEFAULT_PAGE,
    ORDER_LIST_MAX_PAGE,
    ORDER_LIST_MAX_WINDOW,
    PRODUCT_LIST_DEFAULT_PAGE,
    PRODUCT_LIST_MAX_PAGE,
    ShopBook,
    page_after,
)
from tools.wechat_sandbox.state import SandboxState

router = APIRouter(tags=["WeChat API"])

# order/get's "订单不存在" (research/shop.md §1.2).
ORDER_NOT_EXIST = 100002
# getaftersalelist's "非法的时间区间,不得大于24小时" (official getaftersalelist doc, error table).
AFTERSALE_BAD_WINDOW = 10020004


def _ok(**fields: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **fields}


def _bad() -> WeChatApiError:
    return WeChatApiError(INVALID_ARGS, INVALID_ARGS_MSG)


def _shop(state: SandboxState, access_token: str | None) -> ShopBook:
    return state.shop(app_of_token(state, access_token, AppKind.SHOP).appid)


def _id(body: dict[str, Any], key: str) -> str:
    """A 64-bit id as WeChat takes it: a string of digits or a JSON integer, kept as exact text."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _bad()
    text = str(value)
    if not text.isdigit() or len(text) > 20:
        raise _bad()
    return text


def _int(value: Any) -> int:
    """A number field; WeChat's own samples also send timestamps as digit strings."""
    if isinstance(value, bool):
        raise _bad()
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        return int(value)
    raise _bad()


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    return None if body.get(key) is None else _int(body[key])


def _page_size(body: dict[str, Any], default: int, maximum: int) -> int:
    size = _optional_int(body, "page_size")
    if size is None:
        return default
    if not 1 <= size <= maximum:
        raise _bad()
    return size


def _next_key(body: dict[str, Any]) -> str | None:
    value = body.get("next_key")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise _bad()
    return value


def _time_range(body: dict[str, Any], key: str) -> tuple[int, int] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad()
    start, end = _int(value.get("start_time")), _int(value.get("end_time"))
    if end < start or end - start > ORDER_LIST_MAX_WINDOW:
        # "距离end_time不可超过7天": the docs name no code of its own; the API's invalid-args code.
        raise _bad()
    return start, end


# -- orders -------------------------------------------------------------------------------------


@router.post("/channels/ec/order/get", openapi_extra=json_doc({"order_id": "3705115058471208928"}))
async def order_get(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"order": {...}}``: the order as it is now, pushed or not. ``encode_sensitive_info: true``
    masks the address. 100002 unknown order (or another shop's); 40097 missing or malformed id."""
    shop = _shop(state, access_token)
    body = await json_body(request)
    order = shop.orders.get(_id(body, "order_id"))
    if order is None:
        raise WeChatApiError(ORDER_NOT_EXIST, "order not exist")
    encode = body.get("encode_sensitive_info") is True
    return _ok(order=shop.render_order(order, encode_sensitive_info=encode))


@router.post(
    "/channels/ec/order/list/get",
    openapi_extra=json_doc({"update_time_range": {"start_time": 1700000000, "end_time": 1700600000}, "page_size": 10}),
)
async def order_list_get(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"order_id_list", "next_key", "has_more"}`` oldest first. At least one of
    ``create_time_range`` / ``update_time_range`` (each at most 7 days, inclusive bounds; sorted by
    update time when that range is given); ``status`` (20 also matches 21, 30 also 21), ``openid``
    (the order's owner), ``page_size`` 1–100 (default 10), ``next_key`` from the previous page.
    40097 for a wider or inverted window, no window, a bad page size or next_key."""
    shop = _shop(state, access_token)
    body = await json_body(request)
    create_range = _time_range(body, "create_time_range")
    update_range = _time_range(body, "update_time_range")
    if create_range is None and update_range is None:
        raise _bad()
    openid = body.get("openid")
    if openid is not None and not isinstance(openid, str):
        raise _bad()
    keys = shop.list_orders(
        create_range=create_range,
        update_range=update_range,
        status=_optional_int(body, "status"),
        openid=openid or None,
    )
    size = _page_size(body, ORDER_LIST_DEFAULT_PAGE, ORDER_LIST_MAX_PAGE)
    ids, next_key, more = page_after(keys, _next_key(body), size)
    return _ok(order_id_list=ids, next_key=next_key, has_more=more)


# -- gifts --------------------------------------------------------------------------------------


@router.post(
    "/channels/ec/order/presentsuborder/get", openapi_extra=json_doc({"present_order_id": "4232433395290081234"})
)
async def present_suborder_get(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"order_ids": [...]}``: the shop orders of a gift (one per gift in the sandbox). 40097 unknown id."""
    shop = _shop(state, access_token)
    body = await json_body(request)
    order = shop.presents.get(_id(body, "present_order_id"))
    if order is None:
        raise _bad()
    return _ok(order_ids=[order.order_id])


@router.post("/channels/ec/order/present/get", openapi_extra=json_doc({"present_order_id": "4232433395290081234"}))
async def present_get(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"present": {present_order_id, create_time, present_detail{price_info{order_price},
    pay_info{pay_time}, wishmessage}, sub_order_list[{order_id, openid?, status}],
    is_b2c_free_present}}``; ``openid`` (the recipient's, for the calling app) only once accepted.
    Shop and mini-program tokens. 40097 unknown id."""
    app = app_of_token(state, access_token, AppKind.SHOP, AppKind.MINI_PROGRAM)
    body = await json_body(request)
    present_order_id = _id(body, "present_order_id")
    for shop_app in state.apps.of_kind(AppKind.SHOP):
        shop = state.shop(shop_app.appid)
        order = shop.presents.get(present_order_id)
        if order is not None and (app.kind is AppKind.MINI_PROGRAM or shop_app.appid == app.appid):
            return _ok(present=shop.render_present(order, app.appid))
    raise _bad()


# -- after-sales --------------------------------------------------------------------------------


@router.post(
    "/channels/ec/aftersale/getaftersaleorder", openapi_extra=json_doc({"after_sale_order_id": "4012345678901234567"})
)
async def aftersale_get(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"after_sale_order": {...}}`` (status strings as WxJava's AfterSaleStatus). 40097 unknown id."""
    shop = _shop(state, access_token)
    body = await json_body(request)
    aftersale = shop.aftersales.get(_id(body, "after_sale_order_id"))
    if aftersale is None:
        raise _bad()
    return _ok(after_sale_order=shop.render_aftersale(aftersale))


@router.post(
    "/channels/ec/aftersale/getaftersalelist",
    openapi_extra=json_doc({"begin_create_time": 1700000000, "end_create_time": 1700080000}),
)
async def aftersale_list(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"after_sale_order_id_list", "has_more", "next_key"}`` by creation time, 100 a page.
    10020004 for a window over 24 hours; 40097 a missing or inverted window or a bad next_key."""
    shop = _shop(state, access_token)
    body = await json_body(request)
    begin, end = _int(body.get("begin_create_time")), _int(body.get("end_create_time"))
    if end < begin:
        raise _bad()
    if end - begin > AFTERSALE_LIST_MAX_WINDOW:
        raise WeChatApiError(AFTERSALE_BAD_WINDOW, "非法的时间区间,不得大于24小时")
    ids, next_key, more = page_after(shop.list_aftersales(begin, end), _next_key(body), AFTERSALE_LIST_PAGE)
    return _ok(after_sale_order_id_list=ids, has_more=more, next_key=next_key)


# -- products -----------------------------------------------------------------------------------


@router.post("/channels/ec/product/get", openapi_extra=json_doc({"product_id": "10000103058379", "data_type": 1}))
async def product_get(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``data_type`` 1 (default) → ``product`` (online data), 2 → ``edit_product`` (the draft),
    3 → both. 40097 unknown product or data_type."""
    shop = _shop(state, access_token)
    body = await json_body(request)
    product = shop.products.get(_id(body, "product_id"))
    data_type = _optional_int(body, "data_type") or 1
    if product is None or data_type not in (1, 2, 3):
        raise _bad()
    out = _ok()
    if data_type in (1, 3):
        out["product"] = product.render()
    if data_type in (2, 3):
        out["edit_product"] = product.render(draft=True)
    return out


@router.post("/channels/ec/product/list/get", openapi_extra=json_doc({"status": 5, "page_size": 10}))
async def product_list_get(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"product_ids", "next_key", "total_num"}``. Every seeded product is listed (status 5); a
    ``status`` filter of anything else finds none. ``page_size`` 1–30 (default 10)."""
    shop = _shop(state, access_token)
    body = await json_body(request)
    status = _optional_int(body, "status")
    size = _page_size(body, PRODUCT_LIST_DEFAULT_PAGE, PRODUCT_LIST_MAX_PAGE)
    keys = [(n, pid) for n, pid in enumerate(shop.products)] if status in (None, 5) else []
    ids, next_key, _ = page_after(keys, _next_key(body), size)
    return _ok(product_ids=ids, next_key=next_key, total_num=len(keys))
