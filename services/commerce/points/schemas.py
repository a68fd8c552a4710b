"""Answers of the points routes, exactly the mini-program's shapes (contracts.md)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Expiring(BaseModel):
    points: int
    expires_at: datetime


class PointsBalance(BaseModel):
    available: int
    pending: int
    expiring: list[Expiring]


class PointsSummary(BaseModel):
    """What ``GET /api/v1/me`` adds: ``tier`` and ``points``."""

    tier: str
    points: PointsBalance


class LedgerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry_id: str
    kind: str = Field(description="earn, redeem, expire, reverse, adjust, checkin")
    points: int
    state: str = Field(description="pending, available, expired, reversed, spent, released, merged")
    order_id: str | None = None
    created_at: datetime


class Ledger(BaseModel):
    entries: list[LedgerEntry]
    next_cursor: str | None


class NewCampaign(BaseModel):
    """An operator's points campaign: ``bonus_pct`` of the base order points on top, while it runs."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{2,63}$")
    name: str = Field(min_length=1, max_length=100)
    bonus_pct: int = Field(gt=0, le=1000)
    starts_at: datetime
    ends_at: datetime
