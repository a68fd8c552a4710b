from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MemberIdStr = str


class Audience(BaseModel):
    """Exactly one of: an identity tag, an identity segment, or a list of member ids."""

    model_config = ConfigDict(extra="forbid")

    tag: str | None = Field(default=None, min_length=1, max_length=32)
    segment: str | None = Field(default=None, min_length=1, max_length=64)
    member_ids: list[str] | None = Field(default=None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _exactly_one(self) -> Audience:
        given = [k for k in ("tag", "segment", "member_ids") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("the audience is exactly one of tag, segment or member_ids")
        if self.member_ids is not None:
            bad = [
                m for m in self.member_ids if not (0 < len(m) <= 64 and m.replace("-", "").isalnum() and m.isascii())
            ]
            if bad:
                raise ValueError("member_ids holds a malformed id")
            if len(set(self.member_ids)) != len(self.member_ids):
                raise ValueError("member_ids holds an id twice")
        return self


class CampaignMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=64)
    body: str = Field(min_length=1, max_length=300)
    # A mini-program page, optionally with its own query; notify adds campaign_id= and the send.
    page: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*(\?[A-Za-z0-9_.=&%-]*)?$")


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    audience: Audience
    message: CampaignMessage
    kind: Literal["marketing"] = "marketing"


class CampaignCreated(BaseModel):
    campaign_id: uuid.UUID


class Preview(BaseModel):
    audience: int
    channels: dict[str, int]
    skipped: dict[str, int]


class CampaignView(BaseModel):
    campaign_id: uuid.UUID
    name: str
    kind: str
    state: Literal["draft", "running", "completed", "cancelled"]
    targeted: int
    sent: int
    delivered: int
    skipped: dict[str, int]
    failed: int
    waiting: int
    opened: int
    ordered: int
    channels: dict[str, int]
