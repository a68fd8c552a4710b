"""Bodies and answers of the operator API (contracts.md, "Gateway: operator API").

The member 360 is composed from three owners; each part keeps the owner's fields (an operator sees
what the owner knows; identity masks the phone). Campaign bodies are checked here with notify's
bounds, so a malformed one is refused at the door; notify checks them again.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from services.gateway.loyalty.schemas import LedgerEntry
from services.gateway.members.schemas import ExpiringPoints
from services.gateway.sessions.schemas import ApiRequest


class _Open(BaseModel):
    """An owner's object: the named fields are checked, the owner's others pass on."""

    model_config = ConfigDict(extra="allow")


class IdentityOut(_Open):
    appid: str
    app_kind: str
    openid: str | None = None


class FollowOut(_Open):
    appid: str
    subscribed: bool


class AdminPoints(_Open):
    available: int
    pending: int
    expiring: list[ExpiringPoints]
    ledger: list[LedgerEntry] = Field(description="The latest entries, newest first.")


class MessageOut(BaseModel):
    """One entry of a member's send log: every message considered for the member."""

    send_id: str
    rule: str | None = Field(description="The message rule, for a transactional message.")
    campaign_id: str | None = Field(description="The campaign, for a campaign message.")
    kind: str = Field(description="transactional | marketing")
    channel: str | None = Field(description="oa_template, mp_subscribe, oa_subscribe_notice, customer_service")
    status: str = Field(description="pending, sent, delivered, failed, skipped, deferred")
    reason: str | None = Field(description="Why skipped, deferred or failed: not_following, no_authorisation, ...")
    errcode: int | None = Field(description="WeChat's errcode when WeChat refused it.")
    template_id: str | None
    page: str | None
    attempts: int
    created_at: datetime
    due_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    ordered_at: datetime | None
    order_id: str | None


class IdentityPart(_Open):
    """identity's member view."""

    member_id: str
    resolved_from: str | None = None
    unionid_known: bool
    identities: list[IdentityOut]
    follows: list[FollowOut]
    tags: list[str]
    phone_masked: str | None = None


class CommercePart(_Open):
    """commerce's member view (``GET /internal/admin/members/{id}``)."""

    tier: str
    points: AdminPoints
    orders: list[dict[str, Any]]
    gifts: list[dict[str, Any]]
    coupons: list[dict[str, Any]]
    redemptions: list[dict[str, Any]]
    affiliate_orders: list[dict[str, Any]]


class Member360(IdentityPart):
    """Who the member is (identity), what they bought and hold (commerce), what they were sent (notify).

    A part whose owner could not answer is null and named in ``unavailable``."""

    tier: str | None = None
    points: AdminPoints | None = None
    orders: list[dict[str, Any]] | None = None
    gifts: list[dict[str, Any]] | None = None
    coupons: list[dict[str, Any]] | None = None
    redemptions: list[dict[str, Any]] | None = None
    affiliate_orders: list[dict[str, Any]] | None = None
    messages: list[MessageOut] | None = Field(default=None, description="The latest messages, newest first.")
    unavailable: list[Literal["commerce", "notify"]] = Field(
        default_factory=list, description="The parts that could not be read now (retry later)."
    )


class Audience(ApiRequest):
    tag: str | None = Field(default=None, min_length=1, max_length=32)
    segment: str | None = Field(default=None, min_length=1, max_length=64)
    member_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _exactly_one(self) -> Audience:
        if sum(v is not None for v in (self.tag, self.segment, self.member_ids)) != 1:
            raise ValueError("the audience is exactly one of tag, segment or member_ids")
        if self.member_ids is not None and len(set(self.member_ids)) != len(self.member_ids):
            raise ValueError("member_ids holds an id twice")
        return self


class CampaignMessage(ApiRequest):
    title: str = Field(min_length=1, max_length=64)
    body: str = Field(min_length=1, max_length=300)
    page: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*(\?[A-Za-z0-9_.=&%-]*)?$",
        description="The mini-program page the message opens, optionally with its own query; notify adds "
        "`campaign_id=` and the send's id for attribution.",
    )


class CampaignIn(ApiRequest):
    name: str = Field(min_length=1, max_length=100)
    audience: Audience
    message: CampaignMessage
    kind: Literal["marketing"] = "marketing"


class CampaignCreated(BaseModel):
    campaign_id: str


class CampaignPreview(BaseModel):
    audience: int = Field(description="Members in the audience.")
    channels: dict[str, int] = Field(description="How many would be reached by each channel.")
    skipped: dict[str, int] = Field(description="How many would be skipped, by reason.")


class CampaignAccepted(BaseModel):
    campaign_id: str
    state: Literal["running", "cancelled"] = Field(description="The state the campaign was asked to move to.")


class CampaignOut(BaseModel):
    campaign_id: str
    name: str
    kind: str
    state: Literal["draft", "running", "completed", "cancelled"]
    targeted: int
    sent: int
    delivered: int
    skipped: dict[str, int] = Field(description="Skipped, by reason.")
    failed: int
    waiting: int = Field(description="Deferred by quiet hours, quotas or the member's cap.")
    opened: int
    ordered: int
    channels: dict[str, int]


MESSAGES = TypeAdapter(list[MessageOut])
CREATED = TypeAdapter(CampaignCreated)
PREVIEW = TypeAdapter(CampaignPreview)
CAMPAIGN = TypeAdapter(CampaignOut)
