"""The answer of ``GET /api/v1/gifts`` (contracts.md "Precisely"): never the other side's phone or address."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class GiftItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str
    present_order_id: str
    role: Literal["giver", "recipient"]
    state: Literal["waiting", "accepted", "expired", "cancelled"]
    points: int
