from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpenReport(BaseModel):
    """The mini-program opened a page from a message: the page with the query the message carried."""

    model_config = ConfigDict(extra="forbid")

    member_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    page: str = Field(min_length=1, max_length=1024)


class OpenAnswer(BaseModel):
    attributed: bool
    send_id: str | None = None
    rule: str | None = None
    campaign_id: str | None = None


class FunnelRow(BaseModel):
    """服务号触达 → 小程序转化 → 复购 for one rule or campaign."""

    rule: str | None
    campaign_id: str | None
    considered: int
    sent: int
    delivered: int
    opened: int
    ordered: int
    failed: int
    skipped: int
