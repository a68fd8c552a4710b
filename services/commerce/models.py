"""commerce's tables — ONLY for Alembic; at run time every statement is SQL text on asyncpg.

Money is in fen and points are integers (BIGINT); WeChat ids (orders, gifts, after-sales) are text.
``member_id`` is identity's member id as text.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus.tables import bus_tables
from shared.db import make_base

Base = make_base()
BUS = bus_tables(Base.metadata)

MEMBER = String(64)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class VipDiscountReservation(Base):
    """A membership discount WeChat Shop asked to apply at checkout, keyed by WeChat's ``unique_id``.

    Reserved on ``channels_ec_order_use_vip_discount`` and released on ``..._unuse_vip_discount``;
    both are idempotent because WeChat may retry either.
    """

    __tablename__ = "vip_discount_reservations"
    __table_args__ = (Index("ix_vip_discount_reservations_created_at", "created_at"),)

    unique_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    order_session_id: Mapped[str | None] = mapped_column(String(128))
    shop_appid: Mapped[str | None] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # reserved | released
    price_info: Mapped[dict[str, object]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- the shop mirror -------------------------------------------------------------------------------


class Order(Base):
    """A shop order as last fetched from ``order/get`` (never from an event: events carry ids only)."""

    __tablename__ = "orders"

    order_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    shop_appid: Mapped[str] = mapped_column(String(32))
    member_id: Mapped[str | None] = mapped_column(MEMBER)  # the buyer; a gift's giver
    openid: Mapped[str | None] = mapped_column(String(64))
    unionid: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    order_price_fen: Mapped[int] = mapped_column(BigInteger)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    points: Mapped[int] = mapped_column(BigInteger, server_default="0")  # earned on it (signed net)
    is_gift: Mapped[bool] = mapped_column(Boolean, server_default="false")
    present_order_id: Mapped[str | None] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text, server_default="")
    item_count: Mapped[int] = mapped_column(Integer, server_default="0")
    lines: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # order_detail without the address: operators see prices, deliveries, sharer fields.
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    shop_create_time: Mapped[int] = mapped_column(BigInteger)
    shop_update_time: Mapped[int] = mapped_column(BigInteger)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index("ix_orders_member", "member_id", "shop_create_time"),
        Index("ix_orders_member_paid", "member_id", "paid_at"),
    )


class OrderStatusSeen(Base):
    """Every (status, update_time) the mirror saw for an order, and from where: the status history."""

    __tablename__ = "order_status_history"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(Integer)
    shop_update_time: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(64))  # the push event name, or reconcile
    recorded_at: Mapped[datetime] = _now()

    __table_args__ = (UniqueConstraint("order_id", "status", "shop_update_time"),)


class OrderMilestone(Base):
    """A milestone reached once per order (created, paid, shipped, completed, settled, cancelled):
    its row decides that its ``commerce.order.*`` event is published once, whatever the push order."""

    __tablename__ = "order_milestones"

    order_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    milestone: Mapped[str] = mapped_column(String(16), primary_key=True)
    reached_at: Mapped[datetime] = _now()


class AfterSale(Base):
    __tablename__ = "aftersales"

    after_sale_order_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(32), index=True)
    shop_appid: Mapped[str] = mapped_column(String(32))
    member_id: Mapped[str | None] = mapped_column(MEMBER)
    openid: Mapped[str | None] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(48))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    product_id: Mapped[str | None] = mapped_column(String(32))
    sku_id: Mapped[str | None] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer, server_default="0")
    outcome: Mapped[str | None] = mapped_column(String(16))  # refunded | rejected | cancelled
    shop_update_time: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Gift(Base):
    """One gift per ``present_order_id_str`` (research/shop.md §2.5). No address, no phone: ever."""

    __tablename__ = "gifts"

    present_order_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(32), unique=True)
    shop_appid: Mapped[str] = mapped_column(String(32))
    giver_member_id: Mapped[str | None] = mapped_column(MEMBER, index=True)
    giver_openid: Mapped[str | None] = mapped_column(String(64))
    recipient_member_id: Mapped[str | None] = mapped_column(MEMBER, index=True)
    recipient_openid: Mapped[str | None] = mapped_column(String(64))
    # awaiting_payment, waiting, accepted, completed, expired, refunded, cancelled
    state: Mapped[str] = mapped_column(String(24))
    title: Mapped[str] = mapped_column(Text, server_default="")
    paid_fen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    original_sku_id: Mapped[str | None] = mapped_column(String(32))
    accepted_sku_id: Mapped[str | None] = mapped_column(String(32))
    swapped: Mapped[bool] = mapped_column(Boolean, server_default="false")
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_gifts_waiting_expiry", "expires_at", postgresql_where=text("state = 'waiting'")),)


class Affiliate(Base):
    """The sharer (推客/分享员) an order is attributed to (research/shop.md §6.1)."""

    __tablename__ = "affiliate_attributions"

    order_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    shop_appid: Mapped[str] = mapped_column(String(32))
    buyer_member_id: Mapped[str | None] = mapped_column(MEMBER)
    sharer_openid: Mapped[str | None] = mapped_column(String(64), index=True)
    sharer_unionid: Mapped[str | None] = mapped_column(String(64))
    sharer_member_id: Mapped[str | None] = mapped_column(MEMBER, index=True)
    sharer_nickname: Mapped[str | None] = mapped_column(Text)
    sale_channel: Mapped[int | None] = mapped_column(Integer)
    account_type: Mapped[int | None] = mapped_column(Integer)
    commission_fen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    commission_settled: Mapped[bool] = mapped_column(Boolean, server_default="false")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class SyncCursor(Base):
    """How far the order reconcile has walked ``order/list/get`` by update time, per shop."""

    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = _now()


# --- points -----------------------------------------------------------------------------------------


class PointsAccount(Base):
    """A member's balances: a cache of the ledger (``available`` = Σ available_delta, ``pending`` =
    Σ pending_delta), checked by ``python -m services.commerce.reconcile``. Every posting locks this
    row first, which serialises a member's postings. ``debt`` is what a reversal took beyond the
    lots' remaining points (points already spent); the next points to become available repay it."""

    __tablename__ = "points_accounts"

    member_id: Mapped[str] = mapped_column(MEMBER, primary_key=True)
    available: Mapped[int] = mapped_column(BigInteger, server_default="0")
    pending: Mapped[int] = mapped_column(BigInteger, server_default="0")
    debt: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("pending >= 0", name="pending_not_negative"),
        CheckConstraint("debt >= 0", name="debt_not_negative"),
        CheckConstraint("available >= -debt", name="negative_only_by_debt"),
    )


class PointsEntry(Base):
    """The append-only ledger: one row per posting, never updated or deleted."""

    __tablename__ = "points_entries"

    entry_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(MEMBER)
    # earn, settle, redeem, release, expire, reverse, adjust, checkin, merge_in, merge_out
    kind: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(32))
    points: Mapped[int] = mapped_column(BigInteger)  # what the member sees (signed)
    available_delta: Mapped[int] = mapped_column(BigInteger)
    pending_delta: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[str | None] = mapped_column(String(32), index=True)
    lot_id: Mapped[int | None] = mapped_column(BigInteger)
    ref: Mapped[str | None] = mapped_column(String(64))
    idem_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_points_entries_member", "member_id", "entry_id"),)


class PointsLot(Base):
    """Points earned together, spent FIFO and expiring together.

    ``points`` = ``remaining`` + ``spent`` + ``expired`` + ``reversed_unspent`` + ``debt_repaid``;
    ``clawed`` counts spent points a refund took back (the member's debt).
    """

    __tablename__ = "points_lots"

    lot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(MEMBER)
    entry_id: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[str | None] = mapped_column(String(32), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # pending, available, expired, closed
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    spent: Mapped[int] = mapped_column(BigInteger, server_default="0")
    expired: Mapped[int] = mapped_column(BigInteger, server_default="0")
    reversed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    clawed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    debt_repaid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    earned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        Index("ix_points_lots_fifo", "member_id", "state", "expires_at", "lot_id"),
        Index("ix_points_lots_expiry", "expires_at", postgresql_where=text("state = 'available' AND remaining > 0")),
    )


class PointsAllocation(Base):
    """Which lots a redemption took its points from (FIFO), so a release puts them back."""

    __tablename__ = "points_allocations"

    entry_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    lot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)


class PointsCampaign(Base):
    """A bonus on order points while it runs: ``bonus_pct`` of the base points on top."""

    __tablename__ = "points_campaigns"

    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    bonus_pct: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class MemberTier(Base):
    __tablename__ = "member_tiers"

    member_id: Mapped[str] = mapped_column(MEMBER, primary_key=True)
    tier: Mapped[str] = mapped_column(String(32))
    spend_12m_fen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # The tier holds until then; only then can it go down.
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    changed_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


# --- points mall, coupons, check-ins ------------------------------------------------------------------


class Reward(Base):
    __tablename__ = "rewards"

    reward_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # coupon | product
    cost_points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    # For a coupon reward: the coupon it issues (discount_fen, min_spend_fen, validity_days).
    coupon: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        CheckConstraint("cost_points > 0", name="cost_positive"),
    )


class Redemption(Base):
    __tablename__ = "redemptions"

    redemption_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(MEMBER)
    reward_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))  # reserved, committed, released
    points: Mapped[int] = mapped_column(BigInteger)
    coupon_id: Mapped[str | None] = mapped_column(String(64))
    failure: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("member_id", "idempotency_key"),
        Index("ix_redemptions_member", "member_id", "created_at"),
    )


class Coupon(Base):
    __tablename__ = "coupons"

    coupon_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(MEMBER)
    kind: Mapped[str] = mapped_column(String(24))  # welcome, tier, abandoned_order, reward
    title: Mapped[str] = mapped_column(Text)
    discount_fen: Mapped[int] = mapped_column(BigInteger)
    min_spend_fen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    state: Mapped[str] = mapped_column(String(16))  # available, used, expired
    # The claim: one coupon per key (welcome:<member>, tier:<member>:<tier>, ...): the claim limit.
    claim_key: Mapped[str] = mapped_column(String(200), unique=True)
    shop_coupon_id: Mapped[str | None] = mapped_column(String(32))
    shop_user_coupon_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    order_id: Mapped[str | None] = mapped_column(String(32))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_order_id: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (Index("ix_coupons_member", "member_id", "issued_at"),)


class CheckIn(Base):
    __tablename__ = "checkins"

    member_id: Mapped[str] = mapped_column(MEMBER, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)  # the Beijing date
    streak: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_checkins_day", "day"),)
