"""Bodies of the member's routes, and identity's answers as far as the gateway reads them.

Every request body forbids unknown fields (422): nothing the client sends can set a member id, a
tier, points or any other field the server owns.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.gateway.sessions.schemas import WX_CODE, ApiRequest

MAX_EVENTS_PER_CALL = 50
EVENT_MAX_AGE = timedelta(days=30)
EVENT_MAX_SKEW = timedelta(minutes=5)
MAX_PROPS = 10


class LinkedApp(BaseModel):
    appid: str
    kind: str = Field(description="official_account | mini_program | shop")


class ServiceAccountFollow(BaseModel):
    appid: str
    following: bool = Field(description="Whether this person currently follows the brand's service account.")


class ExpiringPoints(BaseModel):
    points: int
    expires_at: datetime = Field(description="When these points expire.")


class PointsBalance(BaseModel):
    available: int = Field(description="Points the member can spend now (negative while a refund's debt is open).")
    pending: int = Field(description="Points earned on paid orders, available once the shop settles them.")
    expiring: list[ExpiringPoints] = Field(description="Available points that expire soon, soonest first.")


class MeOut(BaseModel):
    member_id: uuid.UUID
    unionid_known: bool = Field(
        description="Whether WeChat has told us this person's UnionID, which links them across the brand's apps."
    )
    linked_apps: list[LinkedApp] = Field(description="The brand's apps that know this person.")
    service_account: ServiceAccountFollow | None = Field(
        description="Follow state of the brand's service account; null when the brand has none configured."
    )
    phone_masked: str | None = Field(default=None, description="The bound phone number, masked; null when none.")
    tier: str | None = Field(
        default=None,
        description="Membership tier (a new member sits at the base tier). Null only when commerce could not "
        "answer in time: the rest of the page is still served, and a retry shows it; never a placeholder.",
    )
    points: PointsBalance | None = Field(
        default=None,
        description="The points balance. Null only when commerce could not answer in time (as `tier`); never "
        "a placeholder value.",
    )


class PhoneRequest(ApiRequest):
    code: str = Field(pattern=WX_CODE, description="The code from the `getPhoneNumber` button (single use, 5 minutes).")


class PhoneOut(BaseModel):
    phone_masked: str
    country_code: str
    bound: bool


class BehaviourEvent(ApiRequest):
    type: Literal["product_view", "add_to_cart", "share", "article_read"]
    object_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The product, article or page the event is about (a string: shop ids have 19 digits).",
    )
    occurred_at: AwareDatetime = Field(description="When it happened on the device, with its offset.")
    props: dict[str, str | int | bool] = Field(
        default_factory=dict,
        max_length=MAX_PROPS,
        description="Optional details (at most 10): keys of 1-32 letters, digits or `_`; strings of at most "
        "256 characters; integers within 53 bits.",
    )

    @field_validator("occurred_at")
    @classmethod
    def _recent(cls, value: datetime) -> datetime:
        now = datetime.now(UTC)
        if value > now + EVENT_MAX_SKEW:
            raise ValueError("occurred_at is in the future")
        if value < now - EVENT_MAX_AGE:
            raise ValueError("occurred_at is older than 30 days")
        return value

    @field_validator("props")
    @classmethod
    def _bounded_props(cls, props: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for key, value in props.items():
            if not (1 <= len(key) <= 32) or not key.replace("_", "").isalnum() or not key.isascii():
                raise ValueError("a props key is 1-32 letters, digits or _")
            if isinstance(value, str) and len(value) > 256:
                raise ValueError("a props value has at most 256 characters")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                raise ValueError("a props number must fit in 53 bits")
        return props


class EventsRequest(ApiRequest):
    events: list[BehaviourEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_CALL)


class EventsAccepted(BaseModel):
    accepted: int


# --- identity's answers -----------------------------------------------------------------------------


class _Upstream(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MemberIdentity(_Upstream):
    appid: str
    app_kind: str
    openid: str | None = None


class MemberFollow(_Upstream):
    appid: str
    subscribed: bool


class MemberView(_Upstream):
    member_id: uuid.UUID
    unionid_known: bool
    identities: list[MemberIdentity] = []
    follows: list[MemberFollow] = []
    phone_masked: str | None = None


class PointsSummary(_Upstream):
    """commerce's ``GET /internal/members/{member_id}/points``: what ``/me`` adds."""

    tier: str
    points: PointsBalance


class PhoneBinding(_Upstream):
    phone_masked: str
    country_code: str
    bound: bool
