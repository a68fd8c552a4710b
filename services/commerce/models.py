"""commerce's tables. The shop mirror, gifts and points arrive with the commerce issue."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus.tables import bus_tables
from shared.db import make_base

Base = make_base()
BUS = bus_tables(Base.metadata)


class VipDiscountReservation(Base):
    """A membership discount WeChat Shop asked to apply at checkout, keyed by WeChat's ``unique_id``.

    Reserved on ``channels_ec_order_use_vip_discount`` and released on ``..._unuse_vip_discount``;
    both are idempotent because WeChat may retry either.
    """

    __tablename__ = "vip_discount_reservations"

    unique_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    order_session_id: Mapped[str | None] = mapped_column(String(128))
    shop_appid: Mapped[str | None] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # reserved | released
    price_info: Mapped[dict[str, object]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
