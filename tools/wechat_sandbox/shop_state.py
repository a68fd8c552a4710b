"""WeChat Shop (微信小店) as the sandbox keeps it: a seeded catalog, orders through their whole life,
gifts (送礼物) and after-sales, rendered the way ``/channels/ec/...`` answers.

Facts and their sources are in research/shop.md: statuses §1.1, order JSON §1.3, products §1.4,
after-sales §1.5, push events §1.6, gifting §2 (state machine §2.5), affiliate fields §6.1. Where
the docs are silent the choice is the sandbox's own and README.md says so.

Every state change returns the :class:`ShopEvent` list WeChat Shop would push for it; the control
routes (``shop_control.py``) send them. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tools.wechat_sandbox.errors import WeChatApiError

if TYPE_CHECKING:
    from tools.wechat_sandbox.state import Clock, SandboxIds, VirtualUser

# Order statuses (research/shop.md §1.1).
PENDING_PAYMENT = 10  # 待付款
GIFT_WAITING = 12  # 礼物待收下
PAID = 20  # 待发货
PARTLY_SHIPPED = 21  # 部分发货
SHIPPED = 30  # 待收货
COMPLETED = 100  # 完成
CANCELLED_BY_AFTERSALE = 200  # 全部商品售后之后，订单取消
CANCELLED = 250  # 未付款用户主动取消或超时未付款自动取消

# channels_ec_order_cancel.cancel_type (research/shop.md §1.6).
CANCEL_BY_USER = 1
CANCEL_BY_TIMEOUT = 2
CANCEL_ALL_REFUNDED = 3

# After-sale statuses (WxJava AfterSaleStatus; research/shop.md §1.5).
AS_PROCESSING = "MERCHANT_PROCESSING"
AS_CANCELLED = "USER_CANCELD"  # sic: WeChat's spelling
AS_REJECT_REFUND = "MERCHANT_REJECT_REFUND"
AS_REJECT_RETURN = "MERCHANT_REJECT_RETURN"
AS_REFUND_SUCCESS = "MERCHANT_REFUND_SUCCESS"
AS_RETURN_SUCCESS = "MERCHANT_RETURN_SUCCESS"

# A gift not accepted within 24 hours fails and is refunded (research/shop.md §2.1).
GIFT_TTL = 24 * 3600
# Commission the sandbox books for a sharer, in per mille of the line's paid price (its own choice).
SHARER_COMMISSION_PER_MILLE = 100
ORDER_LIST_MAX_WINDOW = 7 * 86400
ORDER_LIST_MAX_PAGE = 100
ORDER_LIST_DEFAULT_PAGE = 10
PRODUCT_LIST_MAX_PAGE = 30
PRODUCT_LIST_DEFAULT_PAGE = 10
AFTERSALE_LIST_MAX_WINDOW = 86400
AFTERSALE_LIST_PAGE = 100
# The global "invalid args" code, the order/get doc's answer to bad parameters (research/shop.md §1.2).
INVALID_ARGS = 40097
INVALID_ARGS_MSG = "invalid args"

_ORDER_ID_PREFIX = 37
_PRESENT_ID_PREFIX = 42
_AFTERSALE_ID_PREFIX = 40
_IMG = "https://mmecimage.cn/p/sandbox/{}"

# The seeded catalog: (title, [(sku attributes, sale price, market price, stock)]). The cup's two
# colours share a price so a gift recipient can swap between them; the gilded one costs more.
_CATALOG: tuple[tuple[str, tuple[tuple[dict[str, str], int, int, int], ...]], ...] = (
    (
        "Siyu 茉莉花茶",
        (({"规格": "100g"}, 6800, 8800, 100), ({"规格": "250g"}, 12800, 15800, 100)),
    ),
    (
        "Siyu 随行保温杯",
        (
            ({"颜色": "月白"}, 9900, 12900, 50),
            ({"颜色": "墨黑"}, 9900, 12900, 50),
            ({"颜色": "限定鎏金"}, 12900, 15900, 5),
        ),
    ),
    ("Siyu 帆布袋", (({"尺寸": "均码"}, 3900, 4900, 200),)),
)


class ShopError(Exception):
    """A change WeChat Shop would not make (HTTP 409 on the control API)."""

    status_code = 409


class ShopNotFound(ShopError):
    status_code = 404


# --------------------------------------------------------------------------------------------
# Catalog


@dataclass
class Sku:
    sku_id: str
    attrs: dict[str, str]
    sale_price: int  # fen
    market_price: int  # fen
    stock_num: int
    sku_code: str

    def sku_attrs(self) -> list[dict[str, str]]:
        return [{"attr_key": k, "attr_value": v} for k, v in self.attrs.items()]


@dataclass
class Product:
    product_id: str
    title: str
    skus: list[Sku]

    def sku(self, sku_id: str) -> Sku | None:
        return next((s for s in self.skus if s.sku_id == sku_id), None)

    def summary(self) -> dict[str, Any]:
        """The control API's view: ``{product_id, title, skus: [{sku_id, sale_price, stock_num, attrs}]}``."""
        return {
            "product_id": self.product_id,
            "title": self.title,
            "skus": [
                {
                    "sku_id": s.sku_id,
                    "sale_price": s.sale_price,
                    "market_price": s.market_price,
                    "stock_num": s.stock_num,
                    "attrs": s.sku_attrs(),
                }
                for s in self.skus
            ],
        }

    def render(self, *, draft: bool = False) -> dict[str, Any]:
        """``product`` (online data) or ``edit_product`` (the draft) of ``/channels/ec/product/get``."""
        out: dict[str, Any] = {
            "product_id": self.product_id,
            "out_product_id": "",
            "title": self.title,
            "sub_title": "",
            "head_imgs": [_IMG.format(self.product_id)],
            "desc_info": {"imgs": [_IMG.format(self.product_id)], "desc": self.title},
            "cats_v2": [{"cat_id": "10000111"}, {"cat_id": "10000113"}, {"cat_id": "6091"}],
            "attrs": [],
            "deliver_method": 0,
            "express_info": {"template_id": "0"},
            "extra_service": {"seven_day_return": 1, "freight_insurance": 0},
            "product_type": 1,
            "status": 5,  # 上架
            "min_price": min(s.sale_price for s in self.skus),
            "spu_code": f"SPU{self.product_id[-6:]}",
            "skus": [
                {
                    "sku_id": s.sku_id,
                    "out_sku_id": "",
                    "thumb_img": _IMG.format(s.sku_id),
                    "sale_price": s.sale_price,
                    "market_price": s.market_price,
                    "stock_num": s.stock_num,
                    "sku_code": s.sku_code,
                    "sku_attrs": s.sku_attrs(),
                    "sku_deliver_info": {"stock_type": 0},
                }
                for s in self.skus
            ],
        }
        if draft:
            out["edit_status"] = 4  # 审核成功: the draft is what is online
        return out


def _seed_catalog(ids: SandboxIds, appid: str) -> dict[str, Product]:
    rng = ids.shop_catalog(appid)
    products: dict[str, Product] = {}
    for title, skus in _CATALOG:
        product_id = str(rng.randint(10_000_100_000_000, 10_000_109_999_999))
        product = Product(product_id, title, [])
        for attrs, sale, market, stock in skus:
            sku_id = str(rng.randint(2_000_000_000, 2_099_999_999))
            product.skus.append(Sku(sku_id, dict(attrs), sale, market, stock, f"SKU{sku_id[-6:]}"))
        products[product_id] = product
    return products


# --------------------------------------------------------------------------------------------
# Orders


@dataclass
class OrderLine:
    product: Product
    sku: Sku
    count: int
    sale_price: int  # the unit price when ordered, fen
    shipped: int = 0
    on_aftersale: int = 0
    refunded: int = 0
    swapped_from: Sku | None = None  # the giver's choice when the recipient swapped

    @property
    def total(self) -> int:
        return self.sale_price * self.count

    def left_for_aftersale(self) -> int:
        return self.count - self.on_aftersale - self.refunded


@dataclass
class ShopOrder:
    order_id: str
    buyer: VirtualUser  # who pays: the buyer, or a gift's giver
    lines: list[OrderLine]
    create_time: int
    update_time: int
    prepay_id: str
    status: int = PENDING_PAYMENT
    present_order_id: str | None = None
    recipient: VirtualUser | None = None
    sharer: VirtualUser | None = None
    pay_time: int | None = None
    transaction_id: str | None = None
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    ship_done_time: int | None = None
    confirm_time: int | None = None
    settle_time: int | None = None
    accept_time: int | None = None
    aftersales: list[AfterSale] = field(default_factory=list)

    @property
    def is_present(self) -> bool:
        return self.present_order_id is not None

    @property
    def owner(self) -> VirtualUser | None:
        """订单归属人: the payer, or a gift's recipient (nobody until the gift is accepted)."""
        return self.recipient if self.is_present else self.buyer

    @property
    def event_user(self) -> VirtualUser:
        """Whose openid a push about this order carries: the owner, else the giver."""
        return self.owner or self.buyer

    @property
    def order_price(self) -> int:
        return sum(line.total for line in self.lines)


@dataclass
class AfterSale:
    after_sale_order_id: str
    order: ShopOrder
    line: OrderLine
    user: VirtualUser
    count: int
    type: str  # REFUND | RETURN
    status: str
    create_time: int
    update_time: int
    cancel_time: int | None = None
    return_waybill: str | None = None

    @property
    def in_progress(self) -> bool:
        return self.status == AS_PROCESSING

    @property
    def amount(self) -> int:
        return self.line.sale_price * self.count


@dataclass(frozen=True)
class ShopEvent:
    """One push WeChat Shop sends: ``Event`` name, the buyer it names, and the event's own object."""

    name: str
    user: VirtualUser
    body: dict[str, Any]


def _order_event(name: str, order: ShopOrder, **extra: int) -> ShopEvent:
    # Order ids travel as JSON numbers in these pushes, as in the doc's samples: 19 digits, past
    # 2^53, so a receiver that parses numbers as doubles corrupts them (research/shop.md §1.6).
    return ShopEvent(name, order.event_user, {"order_info": {"order_id": int(order.order_id), **extra}})


def _aftersale_event(aftersale: AfterSale) -> ShopEvent:
    body = {
        "after_sale_order_id": aftersale.after_sale_order_id,
        "order_id": aftersale.order.order_id,
        "status": aftersale.status,
    }
    return ShopEvent("channels_ec_aftersale_update", aftersale.user, {"finder_shop_aftersale_status_update": body})


# --------------------------------------------------------------------------------------------
# The shop


class ShopBook:
    """One shop app's catalog, orders, gifts and after-sales."""

    def __init__(self, appid: str, ids: SandboxIds, clock: Clock) -> None:
        self.appid = appid
        self._ids = ids
        self._clock = clock
        self.products = _seed_catalog(ids, appid)
        self.orders: dict[str, ShopOrder] = {}
        self.presents: dict[str, ShopOrder] = {}
        self.aftersales: dict[str, AfterSale] = {}

    def now(self) -> int:
        return int(self._clock())

    def _new_id(self, prefix: int, taken: Iterable[str]) -> str:
        used = set(taken)
        value = self._ids.shop_record_id(prefix)
        while value in used:  # pragma: no cover - 10^17 values
            value = self._ids.shop_record_id(prefix)
        return value

    # -- lookups ----------------------------------------------------------------------------

    def product(self, product_id: str) -> Product:
        product = self.products.get(product_id)
        if product is None:
            raise ShopNotFound(f"no product {product_id} in shop {self.appid}")
        return product

    def order(self, order_id: str) -> ShopOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise ShopNotFound(f"no order {order_id} in shop {self.appid}")
        return order

    def present(self, present_order_id: str) -> ShopOrder:
        order = self.presents.get(present_order_id)
        if order is None:
            raise ShopNotFound(f"no gift {present_order_id} in shop {self.appid}")
        return order

    def aftersale(self, after_sale_order_id: str) -> AfterSale:
        aftersale = self.aftersales.get(after_sale_order_id)
        if aftersale is None:
            raise ShopNotFound(f"no after-sale {after_sale_order_id} in shop {self.appid}")
        return aftersale

    # -- orders -----------------------------------------------------------------------------

    def create_order(
        self,
        buyer: VirtualUser,
        items: list[tuple[str, str, int]],
        *,
        gift: bool = False,
        sharer: VirtualUser | None = None,
    ) -> tuple[ShopOrder, list[ShopEvent]]:
        """Place an order of ``(product_id, sku_id, count)`` lines. Stock is taken now (下单减库存)
        and given back if the order is cancelled unpaid or the gift expires."""
        if gift and (len(items) != 1 or items[0][2] != 1):
            # "一个礼物只能送一件商品" (research/shop.md §2.1).
            raise ShopError("a WeChat Shop gift is exactly one item: one line with count 1")
        lines: list[OrderLine] = []
        wanted: dict[str, int] = {}
        for product_id, sku_id, count in items:
            product = self.product(product_id)
            sku = product.sku(sku_id)
            if sku is None:
                raise ShopNotFound(f"product {product_id} has no SKU {sku_id}")
            wanted[sku_id] = wanted.get(sku_id, 0) + count
            if wanted[sku_id] > sku.stock_num:
                raise ShopError(f"SKU {sku_id} has {sku.stock_num} in stock, {wanted[sku_id]} ordered (库存不足)")
            lines.append(OrderLine(product, sku, count, sku.sale_price))
        for line in lines:
            line.sku.stock_num -= line.count
        now = self.now()
        order = ShopOrder(
            order_id=self._new_id(_ORDER_ID_PREFIX, self.orders),
            buyer=buyer,
            lines=lines,
            create_time=now,
            update_time=now,
            prepay_id="wx" + self._ids.shop_payment_digits(26),
            sharer=sharer,
        )
        if gift:
            order.present_order_id = self._new_id(_PRESENT_ID_PREFIX, self.presents)
            self.presents[order.present_order_id] = order
        self.orders[order.order_id] = order
        return order, [_order_event("channels_ec_order_new", order)]

    def pay(self, order: ShopOrder) -> list[ShopEvent]:
        self._require(order, "pay", PENDING_PAYMENT)
        now = self.now()
        order.pay_time = now
        order.transaction_id = "4200" + self._ids.shop_payment_digits(24)
        order.status = GIFT_WAITING if order.is_present else PAID
        order.update_time = now
        return [_order_event("channels_ec_order_pay", order, pay_time=now)]

    def ship(self, order: ShopOrder, items: list[tuple[str, int]] | None = None) -> list[ShopEvent]:
        """Ship ``(sku_id, count)`` (everything left when None): 21 while some is left, else 30."""
        if order.status == GIFT_WAITING:
            raise ShopError(f"order {order.order_id} is a gift waiting for its recipient: nothing to ship yet")
        self._require(order, "ship", PAID, PARTLY_SHIPPED)
        todo = self._shipment(order, items)
        if not todo:
            raise ShopError(f"order {order.order_id} has nothing left to ship")
        now = self.now()
        for line, count in todo:
            line.shipped += count
        order.deliveries.append(
            {
                "waybill_id": "SF" + self._ids.shop_payment_digits(13),
                "delivery_id": "SF",
                "delivery_name": "顺丰速运",
                "delivery_time": now,
                "deliver_type": 1,
                "product_infos": [
                    {"product_id": line.product.product_id, "sku_id": line.sku.sku_id, "product_cnt": count}
                    for line, count in todo
                ],
            }
        )
        done = all(line.shipped + line.refunded >= line.count for line in order.lines)
        order.status = SHIPPED if done else PARTLY_SHIPPED
        if done:
            order.ship_done_time = now
        order.update_time = now
        return [_order_event("channels_ec_order_deliver", order, finish_delivery=1 if done else 0)]

    @staticmethod
    def _shipment(order: ShopOrder, items: list[tuple[str, int]] | None) -> list[tuple[OrderLine, int]]:
        left = {line.sku.sku_id: line.count - line.shipped - line.refunded for line in order.lines}
        if items is None:
            return [(line, left[line.sku.sku_id]) for line in order.lines if left[line.sku.sku_id] > 0]
        todo: list[tuple[OrderLine, int]] = []
        for sku_id, count in items:
            line = next((ln for ln in order.lines if ln.sku.sku_id == sku_id), None)
            if line is None:
                raise ShopError(f"order {order.order_id} has no SKU {sku_id}")
            if count > left[sku_id]:
                raise ShopError(f"SKU {sku_id}: {left[sku_id]} left to ship, {count} asked")
            left[sku_id] -= count
            todo.append((line, count))
        return todo

    def confirm(self, order: ShopOrder) -> list[ShopEvent]:
        self._require(order, "confirm", SHIPPED)
        now = self.now()
        order.confirm_time = now
        order.status = COMPLETED
        order.update_time = now
        return [_order_event("channels_ec_order_confirm", order, confirm_type=1)]

    def settle(self, order: ShopOrder) -> list[ShopEvent]:
        """What WeChat does once the after-sale window has passed; the status stays 100."""
        self._require(order, "settle", COMPLETED)
        if order.settle_time is not None:
            raise ShopError(f"order {order.order_id} was settled at {order.settle_time}")
        now = self.now()
        order.settle_time = now
        order.update_time = now
        return [_order_event("channels_ec_order_settle", order, settle_time=now)]

    def cancel(self, order: ShopOrder) -> list[ShopEvent]:
        if order.status in (GIFT_WAITING, PAID, PARTLY_SHIPPED, SHIPPED, COMPLETED):
            raise ShopError(
                f"order {order.order_id} is paid (status {order.status}): WeChat Shop cancels a paid order "
                "only when all of it is refunded by after-sales (or a gift expires)"
            )
        self._require(order, "cancel", PENDING_PAYMENT)
        return self._cancel(order, CANCEL_BY_USER)

    def _cancel(self, order: ShopOrder, cancel_type: int) -> list[ShopEvent]:
        for line in order.lines:
            line.sku.stock_num += line.count
        order.status = CANCELLED
        order.update_time = self.now()
        return [_order_event("channels_ec_order_cancel", order, cancel_type=cancel_type)]

    @staticmethod
    def _require(order: ShopOrder, action: str, *allowed: int) -> None:
        if order.status not in allowed:
            wanted = " or ".join(str(s) for s in allowed)
            raise ShopError(f"cannot {action} order {order.order_id}: its status is {order.status}, not {wanted}")

    # -- gifts ------------------------------------------------------------------------------

    def accept_gift(self, order: ShopOrder, recipient: VirtualUser, sku_id: str | None = None) -> list[ShopEvent]:
        """The recipient 确认收下: they fill in their address and may pick another SKU of the same
        product at the same price (research/shop.md §2.1). The order becomes theirs and waits for
        shipping; the push is ``channels_ec_order_wait_shipping`` (the docs name no gift event)."""
        assert order.present_order_id is not None
        if order.status == PENDING_PAYMENT:
            raise ShopError(f"gift {order.present_order_id} is not paid yet")
        if order.recipient is not None:
            raise ShopError(f"gift {order.present_order_id} was already accepted by {order.recipient.user_id}")
        self._require(order, "accept the gift of", GIFT_WAITING)
        if recipient.user_id == order.buyer.user_id:
            raise ShopError("the giver cannot accept their own gift")
        assert order.pay_time is not None
        deadline = order.pay_time + GIFT_TTL
        if self.now() >= deadline:
            raise ShopError(f"gift {order.present_order_id} expired at {deadline} (24 h after payment); play expire")
        line = order.lines[0]
        if sku_id is not None and sku_id != line.sku.sku_id:
            new_sku = line.product.sku(sku_id)
            if new_sku is None:
                raise ShopError(f"product {line.product.product_id} has no SKU {sku_id} to swap to")
            if new_sku.sale_price != line.sale_price:
                raise ShopError(
                    f"SKU {sku_id} costs {new_sku.sale_price} fen, the gift {line.sale_price}: "
                    "a recipient may only swap to a SKU of the same price"
                )
            if new_sku.stock_num < line.count:
                raise ShopError(f"SKU {sku_id} is out of stock (库存不足)")
            line.sku.stock_num += line.count
            new_sku.stock_num -= line.count
            line.swapped_from, line.sku = line.sku, new_sku
        now = self.now()
        order.recipient = recipient
        order.accept_time = now
        order.status = PAID
        order.update_time = now
        return [_order_event("channels_ec_order_wait_shipping", order)]

    def expire_gift(self, order: ShopOrder) -> list[ShopEvent]:
        """The 24 h timeout: the gift fails, the order is cancelled (超时取消) and the giver refunded."""
        assert order.present_order_id is not None
        if order.recipient is not None:
            raise ShopError(f"gift {order.present_order_id} was accepted: it can no longer expire")
        self._require(order, "expire the gift of", GIFT_WAITING)
        return self._cancel(order, CANCEL_BY_TIMEOUT)

    # -- after-sales ------------------------------------------------------------------------

    def open_aftersale(self, order: ShopOrder, sku_id: str, count: int, kind: str) -> tuple[AfterSale, list[ShopEvent]]:
        """The owner asks for a refund (REFUND) or a return and refund (RETURN); allowed on a settled
        order too. Only a gift's recipient can open one (research/shop.md §2.1)."""
        if order.status not in (PAID, PARTLY_SHIPPED, SHIPPED, COMPLETED):
            raise ShopError(f"order {order.order_id} (status {order.status}) has nothing paid to refund")
        owner = order.owner
        assert owner is not None
        line = next((ln for ln in order.lines if ln.sku.sku_id == sku_id), None)
        if line is None:
            raise ShopError(f"order {order.order_id} has no SKU {sku_id}")
        if count > line.left_for_aftersale():
            raise ShopError(f"SKU {sku_id}: {line.left_for_aftersale()} can still be refunded, {count} asked")
        if kind == "RETURN" and count > line.shipped - line.refunded - line.on_aftersale:
            raise ShopError(f"SKU {sku_id}: nothing shipped to return; ask for a REFUND")
        now = self.now()
        aftersale = AfterSale(
            after_sale_order_id=self._new_id(_AFTERSALE_ID_PREFIX, self.aftersales),
            order=order,
            line=line,
            user=owner,
            count=count,
            type=kind,
            status=AS_PROCESSING,
            create_time=now,
            update_time=now,
        )
        line.on_aftersale += count
        order.aftersales.append(aftersale)
        order.update_time = now
        self.aftersales[aftersale.after_sale_order_id] = aftersale
        return aftersale, [_aftersale_event(aftersale)]

    def close_aftersale(self, aftersale: AfterSale, action: str) -> list[ShopEvent]:
        """refund (the merchant agrees and the money goes back), reject, or cancel (the user withdraws).
        A refund that leaves nothing of an unfinished order cancels it (status 200, cancel_type 3)."""
        if not aftersale.in_progress:
            raise ShopError(f"after-sale {aftersale.after_sale_order_id} is closed ({aftersale.status})")
        now = self.now()
        line, order = aftersale.line, aftersale.order
        line.on_aftersale -= aftersale.count
        events: list[ShopEvent] = []
        if action == "refund":
            line.refunded += aftersale.count
            if aftersale.type == "RETURN":
                aftersale.status = AS_RETURN_SUCCESS
                aftersale.return_waybill = "SF" + self._ids.shop_payment_digits(13)
            else:
                aftersale.status = AS_REFUND_SUCCESS
        elif action == "reject":
            aftersale.status = AS_REJECT_RETURN if aftersale.type == "RETURN" else AS_REJECT_REFUND
        else:
            aftersale.status = AS_CANCELLED
            aftersale.cancel_time = now
        aftersale.update_time = now
        order.update_time = now
        events.append(_aftersale_event(aftersale))
        everything_refunded = all(ln.refunded >= ln.count for ln in order.lines)
        if action == "refund" and everything_refunded and order.status in (PAID, PARTLY_SHIPPED, SHIPPED):
            order.status = CANCELLED_BY_AFTERSALE
            events.append(_order_event("channels_ec_order_cancel", order, cancel_type=CANCEL_ALL_REFUNDED))
        return events

    # -- lists ------------------------------------------------------------------------------

    def list_orders(
        self,
        *,
        create_range: tuple[int, int] | None,
        update_range: tuple[int, int] | None,
        status: int | None,
        openid: str | None,
    ) -> list[tuple[int, str]]:
        """(sort time, order_id) of the matching orders, oldest first: by update time when an update
        range is given, else by creation time."""
        wanted = _STATUS_FILTERS.get(status, {status}) if status is not None else set()
        out: list[tuple[int, str]] = []
        for order in self.orders.values():
            if create_range and not create_range[0] <= order.create_time <= create_range[1]:
                continue
            if update_range and not update_range[0] <= order.update_time <= update_range[1]:
                continue
            if status is not None and order.status not in wanted:
                continue
            if openid is not None and (order.owner is None or order.owner.openids[self.appid] != openid):
                continue
            key = order.update_time if update_range else order.create_time
            out.append((key, order.order_id))
        return sorted(out)

    def list_aftersales(self, begin: int, end: int) -> list[tuple[int, str]]:
        return sorted(
            (a.create_time, a.after_sale_order_id) for a in self.aftersales.values() if begin <= a.create_time <= end
        )

    # -- rendering --------------------------------------------------------------------------

    def render_order(self, order: ShopOrder, *, encode_sensitive_info: bool = False) -> dict[str, Any]:
        """The ``order`` object of ``/channels/ec/order/get``: always the current state."""
        appid = self.appid
        out: dict[str, Any] = {
            "order_id": order.order_id,
            "status": order.status,
            "create_time": order.create_time,
            "update_time": order.update_time,
            "order_detail": self._order_detail(order, encode_sensitive_info),
            "aftersale_detail": {
                "on_aftersale_order_cnt": sum(1 for a in order.aftersales if a.in_progress),
                # Each entry's numeric status has no published enum; read the after-sale itself.
                "aftersale_order_list": [{"aftersale_order_id": a.after_sale_order_id} for a in order.aftersales],
            },
        }
        owner = order.owner
        if owner is not None:
            out["openid"] = owner.openids[appid]
            if owner.unionid_visible(appid):
                out["unionid"] = owner.unionid
        out["is_present"] = order.is_present
        if order.present_order_id is not None:
            giver = order.buyer
            out["present_order_id"] = int(order.present_order_id)  # 【废弃】 but still sent, as a number
            out["present_order_id_str"] = order.present_order_id
            out["present_send_type"] = 0  # 普通单聊
            out["present_note"] = ""
            out["present_giver_openid"] = giver.openids[appid]
            if giver.unionid_visible(appid):
                out["present_giver_unionid"] = giver.unionid
        return out

    def _order_detail(self, order: ShopOrder, encode: bool) -> dict[str, Any]:
        price = order.order_price
        detail: dict[str, Any] = {
            "product_infos": [self._product_info(line) for line in order.lines],
            "price_info": {
                "product_price": price,
                "order_price": price,
                "freight": 0,
                "discounted_price": 0,
                "is_discounted": False,
                "original_order_price": price,
                "estimate_product_price": price,
                "change_down_price": 0,
                "change_freight": 0,
                "is_change_freight": False,
                "use_deduction": False,
                "deduction_price": 0,
                "merchant_receieve_price": price,  # sic: WeChat's spelling
                "merchant_discounted_price": 0,
                "finder_discounted_price": 0,
                "vip_discounted_price": 0,
            },
            "pay_info": {"prepay_id": order.prepay_id, "prepay_time": order.create_time},
            "delivery_info": {"deliver_method": 0, "delivery_product_info": list(order.deliveries)},
            "ext_info": {
                "customer_notes": "",
                "merchant_notes": "",
                "order_scene": 4 if order.sharer else 1,  # 4 商品分享, 1 其他
                "commission_handling_progress": 1 if order.sharer else 0,
            },
            "settle_info": {"predict_commission_fee": 0},
            "refund_info": {"refund_freight": 0},
        }
        if order.pay_time is not None:
            detail["pay_info"] |= {
                "pay_time": order.pay_time,
                "transaction_id": order.transaction_id,
                "payment_method": 1,  # 微信支付
            }
        owner = order.owner
        if owner is not None:
            address = address_of(owner)
            detail["delivery_info"]["address_info"] = _mask(address) if encode else address
        if order.ship_done_time is not None:
            detail["delivery_info"]["ship_done_time"] = order.ship_done_time
        if order.confirm_time is not None:
            detail["ext_info"]["confirm_receipt_time"] = order.confirm_time
        if order.settle_time is not None:
            detail["settle_info"] |= {"commission_fee": 0, "settle_time": order.settle_time}
        if order.sharer is not None:
            detail |= self._sharer_fields(order, order.sharer)
        return detail

    @staticmethod
    def _product_info(line: OrderLine) -> dict[str, Any]:
        info: dict[str, Any] = {
            "product_id": line.product.product_id,
            "sku_id": line.sku.sku_id,
            "thumb_img": _IMG.format(line.sku.sku_id),
            "sku_cnt": line.count,
            "sale_price": line.sale_price,
            "market_price": line.sku.market_price,
            "title": line.product.title,
            "sku_attrs": line.sku.sku_attrs(),
            "on_aftersale_sku_cnt": line.on_aftersale,
            "finish_aftersale_sku_cnt": line.refunded,
            "sku_code": line.sku.sku_code,
            "real_price": line.total,  # what was paid for the line: no discounts in the sandbox
            "estimate_price": line.total,
            "is_discounted": False,
            "is_change_price": False,
            "out_product_id": "",
            "out_sku_id": "",
            "use_deduction": False,
            "deduction_price": 0,
            "merchant_discounted_price": 0,
            "finder_discounted_price": 0,
            "vip_discounted_price": 0,
            "is_free_gift": False,
            "sku_deliver_info": {"stock_type": 0},
            "extra_service": {"seven_day_return": 1, "freight_insurance": 0},
        }
        if line.swapped_from is not None:
            # 收礼更换sku: its fields are unpublished; shaped like change_sku_info's old/new ids.
            info["accept_change_sku_info"] = {"old_sku_id": line.swapped_from.sku_id, "new_sku_id": line.sku.sku_id}
        return info

    def _sharer_fields(self, order: ShopOrder, sharer: VirtualUser) -> dict[str, Any]:
        """Affiliate attribution (research/shop.md §6.1). The sharer's shop openid (and unionid when
        bound) is in sharer_info / sku_sharer_infos, the fields that carry it."""
        appid = self.appid
        who: dict[str, Any] = {"sharer_openid": sharer.openids[appid]}
        if sharer.unionid_visible(appid):
            who["sharer_unionid"] = sharer.unionid
        who |= {"sharer_type": 0, "share_scene": 5}  # 普通分享员, 商品详情页
        settled = order.settle_time is not None
        return {
            "sharer_info": {**who, "handling_progress": 1},
            "sku_sharer_infos": [{**who, "sku_id": line.sku.sku_id, "from_wecom": False} for line in order.lines],
            "source_infos": [
                {
                    "sku_id": line.sku.sku_id,
                    "sale_channel": 100,  # 达人带货
                    "account_type": 5,  # 带货达人
                    "account_nickname": sharer.nickname,
                }
                for line in order.lines
            ],
            "commission_infos": [
                {
                    "sku_id": line.sku.sku_id,
                    "nickname": sharer.nickname,
                    "type": 0,  # 达人
                    "status": 2 if settled else 1,  # 2 已结算, 1 未结算
                    "amount": (line.count - line.refunded) * line.sale_price * SHARER_COMMISSION_PER_MILLE // 1000,
                }
                for line in order.lines
            ],
        }

    def render_aftersale(self, aftersale: AfterSale) -> dict[str, Any]:
        """The ``after_sale_order`` object of ``/channels/ec/aftersale/getaftersaleorder``."""
        appid, user, line = self.appid, aftersale.user, aftersale.line
        out: dict[str, Any] = {
            "after_sale_order_id": aftersale.after_sale_order_id,
            "status": aftersale.status,
            "openid": user.openids[appid],
        }
        if user.unionid_visible(appid):
            out["unionid"] = user.unionid
        out |= {
            "order_id": aftersale.order.order_id,
            "product_info": {
                "product_id": line.product.product_id,
                "sku_id": line.sku.sku_id,
                "count": aftersale.count,
            },
            "details": {
                "desc": "",
                "receive_product": aftersale.type == "RETURN",
                "cancel_time": aftersale.cancel_time or 0,
                "prove_imgs": [],
                "tel_number": user.phone,
                "media_id_list": [],
            },
            "refund_info": {"amount": aftersale.amount, "refund_reason": 1},
            "merchant_upload_info": {"reject_reason": "", "refund_certificates": []},
            "create_time": aftersale.create_time,
            "update_time": aftersale.update_time,
            "reason": "NO_LONGER_WANT",
            "reason_text": "不想要了",
            "type": aftersale.type,
        }
        if aftersale.return_waybill is not None:
            out["return_info"] = {
                "waybill_id": aftersale.return_waybill,
                "delivery_id": "SF",
                "delivery_name": "顺丰速运",
            }
        return out

    def render_present(self, order: ShopOrder, appid: str) -> dict[str, Any]:
        """The ``present`` object of ``/channels/ec/order/present/get``: one sub-order per gift here."""
        assert order.present_order_id is not None
        sub: dict[str, Any] = {"order_id": order.order_id}
        if order.recipient is not None and appid in order.recipient.openids:
            sub["openid"] = order.recipient.openids[appid]
        sub["status"] = order.status
        detail: dict[str, Any] = {"price_info": {"order_price": order.order_price}, "wishmessage": ""}
        if order.pay_time is not None:
            detail["pay_info"] = {"pay_time": order.pay_time}
        return {
            "present_order_id": order.present_order_id,
            "create_time": order.create_time,
            "present_detail": detail,
            "sub_order_list": [sub],
            "is_b2c_free_present": False,
        }


# status filter -> the statuses it matches: "20 includes partial shipment", "30 includes partial"
# (research/shop.md §1.1).
_STATUS_FILTERS: dict[int, set[int]] = {PAID: {PAID, PARTLY_SHIPPED}, SHIPPED: {SHIPPED, PARTLY_SHIPPED}}


def address_of(user: VirtualUser) -> dict[str, Any]:
    """A seeded mainland address for a user: name and phone are theirs, the street is numbered by user."""
    n = int(user.user_id[1:]) if user.user_id[1:].isdigit() else 0
    return {
        "user_name": user.nickname,
        "postal_code": "200120",
        "province_name": "上海市",
        "city_name": "上海市",
        "county_name": "浦东新区",
        "detail_info": f"世纪大道{n}号",
        "national_code": "310115",
        "tel_number": user.phone,
    }


def _mask(address: dict[str, Any]) -> dict[str, Any]:
    """encode_sensitive_info: the name's first character, the phone's first 3 and last 4, no street."""
    tel = str(address["tel_number"])
    return {
        **address,
        "user_name": str(address["user_name"])[:1] + "**",
        "tel_number": tel[:3] + "****" + tel[-4:],
        "detail_info": "****",
    }


# --------------------------------------------------------------------------------------------
# Paging (next_key is opaque to callers: the last key of the previous page, encoded)


def encode_next_key(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def decode_next_key(value: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        time_part, _, id_part = raw.partition(":")
        return int(time_part), id_part
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise WeChatApiError(INVALID_ARGS, INVALID_ARGS_MSG) from None


def page_after(keys: list[tuple[int, str]], next_key: str | None, size: int) -> tuple[list[str], str, bool]:
    """One page of ``keys`` (sorted) after ``next_key``: (ids, the next key, whether more follow)."""
    start = 0
    if next_key:
        last = decode_next_key(next_key)
        start = next((i for i, k in enumerate(keys) if k > last), len(keys))
    chunk = keys[start : start + size]
    more = start + size < len(keys)
    key = encode_next_key(chunk[-1]) if chunk else (next_key or "")
    return [k[1] for k in chunk], key, more
