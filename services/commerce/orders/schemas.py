"""The order as commerce reads it from ``order/get`` (research/shop.md §1.3), and the answers of the
order routes. The address and phone in ``delivery_info.address_info`` are dropped on the way in:
commerce never stores them, so it can never show a gift's giver where the recipient lives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from shared.events.commerce import OrderLine
from shared.wechat.client import ShopAfterSale, ShopOrder

PAID_STATUSES = frozenset({20, 21, 30, 100})
SHIPPED_STATUSES = frozenset({21, 30, 100})
COMPLETED = 100
CANCELLED_STATUSES = frozenset({200, 250})
GIFT_WAITING = 12

REFUNDED = frozenset({"MERCHANT_REFUND_SUCCESS", "MERCHANT_RETURN_SUCCESS"})
REJECTED = frozenset({"MERCHANT_REJECT_REFUND", "MERCHANT_REJECT_RETURN", "RETURN_CLOSED"})
CANCELLED = frozenset({"USER_CANCELD", "USER_CANCELLED"})

# The milestones an order reaches at most once each, in the order they are announced.
MILESTONES = ("created", "paid", "shipped", "completed", "settled", "cancelled")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return 0


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def aftersale_outcome(status: str) -> str | None:
    if status in REFUNDED:
        return "refunded"
    if status in REJECTED:
        return "rejected"
    if status in CANCELLED:
        return "cancelled"
    return None


@dataclass(frozen=True)
class Sharer:
    openid: str | None
    unionid: str | None
    nickname: str | None
    sale_channel: int | None
    account_type: int | None
    commission_fen: int
    settled: bool
    detail: dict[str, Any]


@dataclass(frozen=True)
class MirroredOrder:
    order_id: str
    shop_appid: str
    status: int
    order_price_fen: int
    lines: list[OrderLine]
    create_time: int
    update_time: int
    openid: str | None  # the owner: the buyer, or a gift's recipient once accepted
    unionid: str | None
    is_gift: bool
    present_order_id: str | None
    giver_openid: str | None
    giver_unionid: str | None
    pay_time: int | None
    settle_time: int | None
    deliveries: list[dict[str, Any]]
    detail: dict[str, Any]
    sharer: Sharer | None

    @property
    def title(self) -> str:
        return self.lines[0].title if self.lines else ""

    @property
    def item_count(self) -> int:
        return sum(line.count for line in self.lines)

    @property
    def buyer_openid(self) -> str | None:
        """Who paid: the giver of a gift, else the owner."""
        return self.giver_openid if self.is_gift else self.openid

    @property
    def buyer_unionid(self) -> str | None:
        return self.giver_unionid if self.is_gift else self.unionid

    @property
    def recipient_openid(self) -> str | None:
        return self.openid if self.is_gift else None

    def reached(self) -> list[str]:
        """The milestones this snapshot shows, whatever pushes were lost on the way."""
        out = ["created"]
        if self.pay_time:
            out.append("paid")
        if self.deliveries or self.status in SHIPPED_STATUSES:
            out.append("shipped")
        if self.status == COMPLETED:
            out.append("completed")
        if self.settle_time:
            out.append("settled")
        if self.status in CANCELLED_STATUSES:
            out.append("cancelled")
        return out

    def swap(self) -> tuple[str | None, str | None]:
        """A gift recipient's same-price SKU swap: (the giver's SKU, the accepted SKU)."""
        for info in self.detail.get("product_infos") or []:
            change = info.get("accept_change_sku_info") if isinstance(info, dict) else None
            if isinstance(change, dict):
                old, new = _text(change.get("old_sku_id")), _text(change.get("new_sku_id"))
                if old and new and old != new:
                    return old, new
        first = self.lines[0].sku_id if self.lines else None
        return first, first

    @classmethod
    def of(cls, order: ShopOrder, shop_appid: str) -> MirroredOrder:
        detail = {k: v for k, v in order.order_detail.items() if k != "delivery_info"}
        delivery = order.order_detail.get("delivery_info")
        deliveries: list[dict[str, Any]] = []
        if isinstance(delivery, dict):
            # Keep the parcels (carrier, waybill), never the address or the phone.
            deliveries = [d for d in delivery.get("delivery_product_info") or [] if isinstance(d, dict)]
            detail["delivery_info"] = {
                k: v for k, v in delivery.items() if k in ("delivery_product_info", "ship_done_time", "deliver_method")
            }
        price = order.order_detail.get("price_info") or {}
        pay = order.order_detail.get("pay_info") or {}
        settle = order.order_detail.get("settle_info") or {}
        lines = [
            OrderLine(
                product_id=_text(p.get("product_id")) or "",
                sku_id=_text(p.get("sku_id")) or "",
                title=_text(p.get("title")) or "",
                count=_int(p.get("sku_cnt")),
                sale_price_fen=_int(p.get("sale_price")),
                paid_fen=_int(p.get("real_price")) or _int(p.get("sale_price")) * _int(p.get("sku_cnt")),
            )
            for p in order.order_detail.get("product_infos") or []
            if isinstance(p, dict)
        ]
        order_price = _int(price.get("order_price")) if isinstance(price, dict) else 0
        return cls(
            order_id=order.order_id,
            shop_appid=shop_appid,
            status=order.status,
            order_price_fen=order_price or sum(line.paid_fen for line in lines),
            lines=lines,
            create_time=order.create_time,
            update_time=order.update_time,
            openid=order.openid or None,
            unionid=order.unionid or None,
            is_gift=bool(order.is_present or order.present_order_id_str),
            present_order_id=order.present_order_id_str,
            giver_openid=order.present_giver_openid or None,
            giver_unionid=order.present_giver_unionid or None,
            pay_time=_int(pay.get("pay_time")) if isinstance(pay, dict) and _int(pay.get("pay_time")) else None,
            settle_time=_int(settle.get("settle_time"))
            if isinstance(settle, dict) and _int(settle.get("settle_time"))
            else None,
            deliveries=deliveries,
            detail=detail,
            sharer=_sharer(order.order_detail),
        )


def _sharer(detail: dict[str, Any]) -> Sharer | None:
    """The affiliate of an order (research/shop.md §6.1): the sharer's openid from ``sharer_info`` /
    ``sku_sharer_infos``, the channel from ``source_infos``, the commission from ``commission_infos``."""
    info = detail.get("sharer_info") if isinstance(detail.get("sharer_info"), dict) else None
    if info is None:
        info = next((s for s in detail.get("sku_sharer_infos") or [] if isinstance(s, dict)), None)
    sources = [s for s in detail.get("source_infos") or [] if isinstance(s, dict)]
    commissions = [c for c in detail.get("commission_infos") or [] if isinstance(c, dict)]
    if info is None and not commissions and not any(_int(s.get("sale_channel")) >= 100 for s in sources):
        return None
    source = sources[0] if sources else {}
    nickname = _text((info or {}).get("nickname")) or _text(source.get("account_nickname"))
    if commissions:
        nickname = nickname or _text(commissions[0].get("nickname"))
    return Sharer(
        openid=_text((info or {}).get("sharer_openid")),
        unionid=_text((info or {}).get("sharer_unionid")),
        nickname=nickname,
        sale_channel=_int(source.get("sale_channel")) if "sale_channel" in source else None,
        account_type=_int(source.get("account_type")) if "account_type" in source else None,
        commission_fen=sum(_int(c.get("amount")) for c in commissions),
        settled=bool(commissions) and all(_int(c.get("status")) == 2 for c in commissions),
        detail={"source_infos": sources, "commission_infos": commissions},
    )


@dataclass(frozen=True)
class OrderSnapshot:
    """Everything an order event needs, read before the unit of work opens."""

    order: MirroredOrder
    aftersales: list[ShopAfterSale]
    buyer_member_id: str | None
    recipient_member_id: str | None
    recipient_created: bool
    sharer_member_id: str | None


# --- answers ---------------------------------------------------------------------------------------


class OrderItem(BaseModel):
    """One order of ``GET /api/v1/me/orders`` (contracts.md)."""

    order_id: str
    status: int
    paid_fen: int
    is_gift: bool
    points: int
