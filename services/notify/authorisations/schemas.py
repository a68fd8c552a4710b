from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SubscriptionResults(BaseModel):
    """What ``wx.requestSubscribeMessage`` returned in the mini-program (at most 3 templates per call)."""

    model_config = ConfigDict(extra="forbid")

    results: dict[str, Literal["accept", "reject", "ban"]] = Field(min_length=1, max_length=3)
    appid: str | None = Field(default=None, pattern=r"^wx[0-9a-f]{16}$")
    openid: str | None = Field(default=None, min_length=1, max_length=64)
