"""SQL for the shop's synchronous callbacks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.commerce.models import VipDiscountReservation


class VipDiscounts:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def reserve(self, unique_id: str, *, openid: str, info: dict[str, Any]) -> str:
        """Reserve once per ``unique_id``; the reservation's status after this call."""
        await self.session.execute(
            pg_insert(VipDiscountReservation)
            .values(
                unique_id=unique_id,
                order_session_id=str(info.get("order_session_id") or "") or None,
                shop_appid=info.get("shop_appid"),
                openid=openid,
                status="reserved",
                price_info=info.get("price_info") if isinstance(info.get("price_info"), dict) else {},
            )
            .on_conflict_do_nothing(index_elements=["unique_id"])
        )
        status = await self.session.scalar(
            select(VipDiscountReservation.status).where(VipDiscountReservation.unique_id == unique_id)
        )
        return str(status)

    async def release(self, unique_id: str) -> None:
        await self.session.execute(
            update(VipDiscountReservation)
            .where(VipDiscountReservation.unique_id == unique_id, VipDiscountReservation.status == "reserved")
            .values(status="released", released_at=datetime.now(UTC))
        )
