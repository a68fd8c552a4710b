"""``GET /internal/members/{member_id}/gifts`` — the gateway's ``GET /api/v1/gifts``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from services.commerce.deps import Deps
from services.commerce.gifts.repository import GiftRepository
from services.commerce.gifts.schemas import GiftItem
from services.commerce.gifts.service import contract_state
from shared.app import InternalOnly

router = APIRouter(prefix="/internal/members", dependencies=[InternalOnly], tags=["internal"])


@router.get("/{member_id}/gifts", response_model=list[GiftItem])
async def member_gifts(
    member_id: uuid.UUID, deps: Deps, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[GiftItem]:
    """Gifts the member sent and received, newest first."""
    async with deps.db.connection() as conn:
        rows = await GiftRepository(conn).of_member(str(member_id), limit)
    return [
        GiftItem(
            order_id=r["order_id"],
            present_order_id=r["present_order_id"],
            role=r["role"],
            state=contract_state(r["state"], r["accepted_at"] is not None),
            points=int(r["points"]),
        )
        for r in rows
    ]
