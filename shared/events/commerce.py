"""Events published by commerce: the shop order mirror, after-sales, gifts, points, tiers, rewards,
coupons, check-ins and affiliate attribution.

Conventions every model here follows (consumers rely on them):

* money is in fen (``*_fen``, int); points are ints (signed only where the name says ``delta``);
* WeChat ids (order, gift, after-sale, coupon) are strings, never numbers;
* ``member_id`` is identity's member id at the time of the event (after a merge, identity's
  ``identity.member.merged`` says where it went); it is ``None`` only where the text says so;
* ``shop_appid`` + ``openid`` name the person in the shop app, for a consumer that needs the raw
  WeChat identity; notify finds a member's mini-program / service-account openids through identity;
* times are timezone-aware ISO 8601 (UTC); ``update_time`` is the shop's own clock (epoch seconds).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events.envelope import EventData

# --- shop orders ----------------------------------------------------------------------------------


class OrderLine(BaseModel):
    """One line of a shop order as commerce mirrors it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    product_id: str
    sku_id: str
    title: str
    count: int
    sale_price_fen: int = Field(description="unit price when ordered")
    paid_fen: int = Field(description="what was paid for the whole line (real_price)")


class _OrderEvent(EventData):
    """What every ``commerce.order.*`` event carries: enough to message the member about the order."""

    order_id: str
    shop_appid: str
    member_id: str | None = Field(
        description="the order's buyer (for a gift: the giver, who paid); None only when identity could not be reached"
        " and the order is kept for a later resolve"
    )
    openid: str | None = Field(default=None, description="the buyer's (giver's) shop openid")
    status: int = Field(description="the shop's status code (research/shop.md §1.1): 10, 12, 20, 21, 30, 100, 200, 250")
    paid_fen: int = Field(description="order_price: what the buyer pays (0 before payment is also the price)")
    title: str = Field(description="the first line's product title, for a message")
    item_count: int = Field(description="units over all lines")
    lines: list[OrderLine] = Field(default_factory=list)
    is_gift: bool = False
    present_order_id: str | None = None
    update_time: int = Field(description="the shop's update_time of the order as fetched (epoch seconds)")


class OrderCreated(_OrderEvent):
    """A shop order appeared (status 10, awaiting payment). Abandoned-order coupons key off it."""

    event_type: ClassVar[str] = "commerce.order.created"


class OrderPaid(_OrderEvent):
    """The buyer paid. For an own purchase ``points_pending`` were posted as pending points."""

    event_type: ClassVar[str] = "commerce.order.paid"

    paid_at: datetime
    points_pending: int = Field(default=0, description="points posted pending for this order (0 for a gift)")
    first_order: bool = Field(default=False, description="the member's first paid order in this shop")


class OrderShipped(_OrderEvent):
    """The shop shipped the order (all of it when ``finish_delivery``, else a part)."""

    event_type: ClassVar[str] = "commerce.order.shipped"

    finish_delivery: bool
    waybill_id: str | None = None
    delivery_name: str | None = Field(default=None, description="the carrier, e.g. 顺丰速运")
    recipient_member_id: str | None = Field(default=None, description="a gift's recipient, who receives the parcel")


class OrderCompleted(_OrderEvent):
    """The buyer (or the timeout) confirmed receipt: status 100."""

    event_type: ClassVar[str] = "commerce.order.completed"

    completed_at: datetime


class OrderSettled(_OrderEvent):
    """The after-sale window closed (``channels_ec_order_settle``): pending points became available."""

    event_type: ClassVar[str] = "commerce.order.settled"

    settled_at: datetime
    points_available: int = Field(description="points of this order that became available")


class OrderCancelled(_OrderEvent):
    """The order was cancelled: unpaid (user, timeout), a gift that expired, or everything refunded."""

    event_type: ClassVar[str] = "commerce.order.cancelled"

    cancel_type: int | None = Field(default=None, description="1 user, 2 timeout, 3 all refunded, 4 oversold")
    was_paid: bool = Field(description="True when money goes back (an expired gift, or all of it refunded)")


class OrderRefunded(_OrderEvent):
    """Money of the order went back to the buyer through an after-sale (a part or all of it)."""

    event_type: ClassVar[str] = "commerce.order.refunded"

    after_sale_order_id: str
    refunded_fen: int = Field(description="this after-sale's refund")
    refunded_total_fen: int = Field(description="everything refunded on the order so far")
    points_reversed: int = Field(description="points taken back for it (>= 0), in proportion to the refund")


# --- after-sales ----------------------------------------------------------------------------------


class _AfterSaleEvent(EventData):
    after_sale_order_id: str
    order_id: str
    shop_appid: str
    member_id: str | None = Field(description="who asked: the buyer, or a gift's recipient")
    openid: str | None = None
    type: str = Field(description="REFUND (仅退款) or RETURN (退货退款)")
    status: str = Field(description="the shop's after-sale status, e.g. MERCHANT_PROCESSING")
    amount_fen: int = Field(description="the refund asked for")
    title: str = Field(default="", description="the product's title, for a message")
    sku_id: str | None = None
    count: int = 0


class AfterSaleOpened(_AfterSaleEvent):
    """A refund or return was asked for."""

    event_type: ClassVar[str] = "commerce.aftersale.opened"


class AfterSaleClosed(_AfterSaleEvent):
    """An after-sale ended: ``outcome`` refunded (money back), rejected (by the merchant) or cancelled (by the user)."""

    event_type: ClassVar[str] = "commerce.aftersale.closed"

    outcome: Literal["refunded", "rejected", "cancelled"]


# --- gifts ----------------------------------------------------------------------------------------


class _GiftEvent(EventData):
    """A gift (送礼物): one per ``present_order_id``; the recipient's address and phone never travel."""

    present_order_id: str
    order_id: str
    shop_appid: str
    giver_member_id: str | None
    giver_openid: str | None = Field(default=None, description="the giver's shop openid")
    recipient_member_id: str | None = Field(default=None, description="unknown until the gift is accepted")
    title: str
    paid_fen: int


class GiftSent(_GiftEvent):
    """The giver paid; the gift waits for its recipient until ``expires_at`` (24 h after payment)."""

    event_type: ClassVar[str] = "commerce.gift.sent"

    expires_at: datetime


class GiftAccepted(_GiftEvent):
    """The recipient accepted (确认收下), possibly swapping to another SKU of the same price."""

    event_type: ClassVar[str] = "commerce.gift.accepted"

    recipient_openid: str | None = Field(default=None, description="the recipient's shop openid")
    recipient_is_new: bool = Field(default=False, description="identity created the member for this gift")
    swapped: bool = False
    original_sku_id: str | None = None
    accepted_sku_id: str | None = None


class GiftExpired(_GiftEvent):
    """Nobody accepted within 24 h: the shop cancels the order and refunds the giver."""

    event_type: ClassVar[str] = "commerce.gift.expired"


class GiftRefunded(_GiftEvent):
    """The giver's money went back (after an expiry, or an after-sale of the whole gift)."""

    event_type: ClassVar[str] = "commerce.gift.refunded"

    refunded_fen: int


class GiftCompleted(_GiftEvent):
    """The recipient received the gift (status 100); the giver's points were posted pending."""

    event_type: ClassVar[str] = "commerce.gift.completed"

    points_pending: int


# --- points ---------------------------------------------------------------------------------------


class _PointsEvent(EventData):
    member_id: str
    available: int = Field(description="the member's available balance after this (may be negative after a reversal)")
    pending: int = Field(description="the member's pending balance after this")


class PointsEarned(_PointsEvent):
    """Points were posted: ``state`` pending (an order paid) or available (a check-in, an adjustment)."""

    event_type: ClassVar[str] = "commerce.points.earned"

    entry_id: str
    points: int
    state: Literal["pending", "available"]
    rule: str = Field(description="order, gift, checkin, campaign, adjust")
    order_id: str | None = None
    expires_at: datetime | None = None


class PointsAvailable(_PointsEvent):
    """Pending points of an order became available (the order settled)."""

    event_type: ClassVar[str] = "commerce.points.available"

    order_id: str
    points: int
    expires_at: datetime | None = None


class PointsRedeemed(_PointsEvent):
    """Points were spent (a reward redemption)."""

    event_type: ClassVar[str] = "commerce.points.redeemed"

    entry_id: str
    points: int = Field(description="spent, > 0")
    redemption_id: str


class PointsReversed(_PointsEvent):
    """Points of a refunded order were taken back; ``negative`` when some had been spent already."""

    event_type: ClassVar[str] = "commerce.points.reversed"

    order_id: str
    points: int = Field(description="taken back, > 0")
    negative: bool


class PointsExpiring(EventData):
    """Points that will expire soon unless spent: sent once per lot, ``notice_days`` ahead."""

    event_type: ClassVar[str] = "commerce.points.expiring"

    member_id: str
    points: int = Field(description="what will expire at expires_at")
    expires_at: datetime
    available: int


class PointsExpired(_PointsEvent):
    """A lot's unspent points expired."""

    event_type: ClassVar[str] = "commerce.points.expired"

    points: int
    expired_at: datetime


# --- tiers ----------------------------------------------------------------------------------------


class TierChanged(EventData):
    """The member's tier moved: up at once when spend crossed a threshold, down only at period end."""

    event_type: ClassVar[str] = "commerce.tier.changed"

    member_id: str
    old_tier: str
    new_tier: str
    direction: Literal["up", "down"]
    spend_12m_fen: int = Field(description="rolling 12-month paid spend that decided it")
    multiplier_pct: int = Field(description="the new tier's earn multiplier in percent (100 = base)")


# --- points mall, coupons, check-ins, affiliates --------------------------------------------------


class RewardRedeemed(EventData):
    """A member redeemed a reward of the points mall and it was fulfilled."""

    event_type: ClassVar[str] = "commerce.reward.redeemed"

    member_id: str
    redemption_id: str
    reward_id: str
    title: str
    kind: Literal["coupon", "product"]
    points_spent: int
    coupon_id: str | None = None


class CouponIssued(EventData):
    """A coupon was given to a member."""

    event_type: ClassVar[str] = "commerce.coupon.issued"

    member_id: str
    coupon_id: str
    title: str
    kind: Literal["welcome", "tier", "abandoned_order", "reward"]
    discount_fen: int
    min_spend_fen: int = 0
    expires_at: datetime
    order_id: str | None = Field(default=None, description="the abandoned order it tries to bring back")


class CouponUsed(EventData):
    """The shop reported a member's coupon used on an order (``channels_ec_user_coupon_use``)."""

    event_type: ClassVar[str] = "commerce.coupon.used"

    member_id: str
    coupon_id: str
    shop_coupon_id: str | None = None
    order_id: str | None = None


class CheckedIn(EventData):
    """A member's daily check-in (one per Beijing day)."""

    event_type: ClassVar[str] = "commerce.checkin.recorded"

    member_id: str
    day: str = Field(description="the Beijing date, YYYY-MM-DD")
    streak: int
    points: int


class AffiliateAttributed(EventData):
    """An order was attributed to a sharer (推客/分享员); ``sharer_member_id`` when the sharer is a known member."""

    event_type: ClassVar[str] = "commerce.affiliate.attributed"

    order_id: str
    shop_appid: str
    buyer_member_id: str | None
    sharer_member_id: str | None = None
    sharer_openid: str | None = None
    sharer_nickname: str | None = None
    commission_fen: int = 0


COMMERCE_EVENTS: tuple[type[EventData], ...] = (
    OrderCreated,
    OrderPaid,
    OrderShipped,
    OrderCompleted,
    OrderSettled,
    OrderCancelled,
    OrderRefunded,
    AfterSaleOpened,
    AfterSaleClosed,
    GiftSent,
    GiftAccepted,
    GiftExpired,
    GiftRefunded,
    GiftCompleted,
    PointsEarned,
    PointsAvailable,
    PointsRedeemed,
    PointsReversed,
    PointsExpiring,
    PointsExpired,
    TierChanged,
    RewardRedeemed,
    CouponIssued,
    CouponUsed,
    CheckedIn,
    AffiliateAttributed,
)
