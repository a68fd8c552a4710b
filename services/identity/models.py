"""Identity's tables: members, their app identities, and follow state."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.app import BusTables
from shared.bus.tables import inbox_table, outbox_table
from shared.db import make_base

Base = make_base()
BUS = BusTables(outbox=outbox_table(Base.metadata), inbox=inbox_table(Base.metadata))


class Member(Base):
    __tablename__ = "members"

    # Random (uuid4: 122 random bits) so ids can be shown to clients without being guessable.
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    unionid: Mapped[str | None] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(32))
    first_scene: Mapped[str | None] = mapped_column(String(128))
    merged_into: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    identities: Mapped[list[AppIdentity]] = relationship(back_populates="member", lazy="raise")


class AppIdentity(Base):
    """One openid in one of the brand's apps."""

    __tablename__ = "app_identities"
    __table_args__ = (UniqueConstraint("appid", "openid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), index=True)
    appid: Mapped[str] = mapped_column(String(32))
    app_kind: Mapped[str] = mapped_column(String(16))
    openid: Mapped[str] = mapped_column(String(64))
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    learned_via: Mapped[str] = mapped_column(String(32))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    member: Mapped[Member] = relationship(back_populates="identities", lazy="raise")


class Follow(Base):
    """Follow state of one openid on one service account, with first- and last-touch attribution."""

    __tablename__ = "follows"
    __table_args__ = (UniqueConstraint("appid", "openid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), index=True)
    appid: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    subscribed: Mapped[bool] = mapped_column(Boolean)
    subscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_scene: Mapped[str | None] = mapped_column(String(128))
    last_scene: Mapped[str | None] = mapped_column(String(128))
    last_ticket: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
