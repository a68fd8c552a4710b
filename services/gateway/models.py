"""The gateway's tables: the inbound log of WeChat pushes (its de-dup keys) and its outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, LargeBinary, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.app import BusTables
from shared.bus.tables import inbox_table, outbox_table
from shared.db import make_base

Base = make_base()
BUS = BusTables(outbox=outbox_table(Base.metadata), inbox=inbox_table(Base.metadata))


class InboundPush(Base):
    """Every verified push, once: the unique ``dedup_key`` is what makes a WeChat retry a no-op.

    Kept durably (not in a cache) for longer than WeChat's longest retry horizon (shop: ~3.6 h).
    Pushes that verified but could not be parsed are kept with ``status='unparsed'`` for inspection.
    """

    __tablename__ = "inbound_pushes"
    __table_args__ = (Index("ix_inbound_pushes_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    appid: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(300), unique=True)
    event_type: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'accepted'"))
    payload: Mapped[dict[str, object]] = mapped_column(JSONB)
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
