"""notify's tables: the bus tables, the log of every message sent with WeChat's result, and the
reply rules it last published. Only Alembic reads this module; at run time the SQL is in the
repositories (``services/notify/<domain>/repository.py``)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus.tables import bus_tables
from shared.db import make_base

Base = make_base()
BUS = bus_tables(Base.metadata)


class Delivery(Base):
    """One message to a member, whatever the channel, from its decision to WeChat's result.

    ``pending`` (decided, committed) → ``sending`` (claimed by one sender, WeChat called after that
    commit) → ``sent`` | ``rejected`` (WeChat said no, final) | ``failed`` (busy too often) |
    ``unknown`` (the call's outcome was never learnt: a timeout, or the sender died mid-call; never
    sent again, since it may have been delivered). A retryable refusal puts it back to ``pending``
    at ``available_at``.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_pending", "available_at", postgresql_where=text("status = 'pending'")),
        Index("ix_deliveries_sending", "claimed_at", postgresql_where=text("status = 'sending'")),
        Index(
            "ix_deliveries_done_created_at",
            "created_at",
            postgresql_where=text("status IN ('sent', 'rejected', 'failed', 'unknown')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))  # customer_service | template | subscribe | ...
    appid: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64), index=True)
    source_event_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    body: Mapped[dict[str, object]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    errcode: Mapped[int | None] = mapped_column(Integer)
    errmsg: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PublishedReplyRules(Base):
    """The reply rules notify last published (``notify.reply_rules.published``): a start publishes
    only when the file's content differs from this."""

    __tablename__ = "published_reply_rules"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    rules: Mapped[dict[str, object]] = mapped_column(JSONB)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- messaging (migration 0005; the SQL is in the domains' repository.py) ---------------------------


class MemberApp(Base):
    """notify's projection of a member's app identity and follow state (from identity's events)."""

    __tablename__ = "member_apps"
    __table_args__ = (PrimaryKeyConstraint("appid", "openid", name="pk_member_apps"),)

    appid: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(64), index=True)
    app_kind: Mapped[str] = mapped_column(String(32))
    following: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ServiceWindow(Base):
    """An open customer-service window and the messages it still allows."""

    __tablename__ = "service_windows"
    __table_args__ = (
        PrimaryKeyConstraint("appid", "openid", name="pk_service_windows"),
        Index("ix_service_windows_expires_at", "expires_at"),
    )

    appid: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    remaining: Mapped[int] = mapped_column(Integer)


class Authorisation(Base):
    """One-time authorisations left and long-term consent for one template."""

    __tablename__ = "authorisations"
    __table_args__ = (
        PrimaryKeyConstraint("appid", "openid", "template_id", name="pk_authorisations"),
        Index("ix_authorisations_spent", "updated_at", postgresql_where=text("remaining = 0 AND NOT long_term")),
    )

    appid: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    template_id: Mapped[str] = mapped_column(String(64))
    remaining: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    long_term: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuthorisationGrant(Base):
    """Each reported acceptance, to count one acceptance reported twice (app and push) once."""

    __tablename__ = "authorisation_grants"
    __table_args__ = (
        Index("ix_authorisation_grants_key", "appid", "openid", "template_id", "granted_at"),
        Index("ix_authorisation_grants_granted_at", "granted_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    appid: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    template_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    matched: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    audience: Mapped[dict[str, object]] = mapped_column(JSONB)
    message: Mapped[dict[str, object]] = mapped_column(JSONB)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    cursor: Mapped[str | None] = mapped_column(Text)
    fanout_done: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    fanout_lease: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The recap as it stood when its sends reached the retention horizon (migration 0006).
    recap: Mapped[dict[str, object] | None] = mapped_column(JSONB)


class Send(Base):
    """One message considered for a member: decision, channel, WeChat's answer, receipt, open, order."""

    __tablename__ = "sends"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_sends_idempotency_key"),
        Index(
            "ix_sends_due", text("priority DESC"), "due_at", postgresql_where=text("status IN ('pending', 'deferred')")
        ),
        Index("ix_sends_member", "member_id", text("id DESC")),
        Index("ix_sends_campaign", "campaign_id", postgresql_where=text("campaign_id IS NOT NULL")),
        Index("ix_sends_msgid", "appid", "msgid", postgresql_where=text("msgid IS NOT NULL")),
        Index("ix_sends_opened", "member_id", "opened_at", postgresql_where=text("opened_at IS NOT NULL")),
        Index("ix_sends_dead", "id", postgresql_where=text("dead")),
        Index(
            "ix_sends_receipt",
            "appid",
            "openid",
            "template_id",
            text("sent_at DESC"),
            postgresql_where=text("status = 'sent'"),
        ),
        Index("ix_sends_order_id", "order_id", postgresql_where=text("order_id IS NOT NULL")),
        Index(
            "ix_sends_done_created_at",
            "created_at",
            postgresql_where=text("status IN ('sent', 'delivered', 'failed', 'skipped')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(300))
    member_id: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[str | None] = mapped_column(UUID)
    kind: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    channel: Mapped[str | None] = mapped_column(String(32))
    appid: Mapped[str | None] = mapped_column(String(32))
    openid: Mapped[str | None] = mapped_column(String(64))
    template_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, object]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    page: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    dead: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    authorised: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    cap_counted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    calling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    msgid: Mapped[str | None] = mapped_column(String(32))
    errcode: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ordered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    order_id: Mapped[str | None] = mapped_column(String(32))


class MarketingCap(Base):
    """A member's marketing messages this Beijing week and on its latest day."""

    __tablename__ = "marketing_caps"
    __table_args__ = (
        PrimaryKeyConstraint("member_id", "week", name="pk_marketing_caps"),
        Index("ix_marketing_caps_week", "week"),
    )

    member_id: Mapped[str] = mapped_column(String(64))
    week: Mapped[date] = mapped_column(Date)
    week_count: Mapped[int] = mapped_column(Integer)
    day: Mapped[date] = mapped_column(Date)
    day_count: Mapped[int] = mapped_column(Integer)


class ApiBudget(Base):
    """One app's use of one WeChat API: today's count, the pace's next slot, a pause (45009/45011)."""

    __tablename__ = "api_budgets"
    __table_args__ = (PrimaryKeyConstraint("appid", "api", name="pk_api_budgets"),)

    appid: Mapped[str] = mapped_column(String(32))
    api: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    used: Mapped[int] = mapped_column(Integer)
    tat: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AbandonedOrder(Base):
    __tablename__ = "abandoned_orders"
    __table_args__ = (
        Index("ix_abandoned_orders_due", "due_at", postgresql_where=text("state = 'waiting'")),
        Index("ix_abandoned_orders_closed", "created_at", postgresql_where=text("state <> 'waiting'")),
    )

    order_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    paid_fen: Mapped[int] = mapped_column(BigInteger)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    coupon: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
