"""notify's tables: the bus tables, the log of every message sent with WeChat's result, and the
reply rules it last published. Only Alembic reads this module; at run time the SQL is in the
repositories (``services/notify/<domain>/repository.py``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
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
