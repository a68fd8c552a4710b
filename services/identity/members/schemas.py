"""Requests and answers of the member routes, and the input patterns every identity route shares."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.wechat.apps import APPID_PATTERN, OPENID_PATTERN

APPID = APPID_PATTERN
OPENID = OPENID_PATTERN

# wx.login and getPhoneNumber codes: opaque tokens of letters, digits, - and _.
WX_CODE = r"^[A-Za-z0-9_\-]{1,256}$"


class Body(BaseModel):
    """A request body: unknown fields are refused (422)."""

    model_config = ConfigDict(extra="forbid")


class ResolveRequest(Body):
    appid: str = Field(max_length=32)
    openid: str = Field(max_length=64)


class IdentityRequest(Body):
    appid: str = Field(pattern=APPID)
    openid: str = Field(pattern=OPENID)
    unionid: str | None = Field(default=None, pattern=OPENID)
    source: Literal["shop_order", "gift_recipient", "gift_giver", "mp_login", "oa_subscribe", "oauth"]


class IdentityAnswer(BaseModel):
    member_id: str
    created: bool
    unionid_known: bool
    merged: list[str]


class MergeRequest(Body):
    member_ids: list[uuid.UUID] = Field(min_length=2, max_length=2)
    reason: Literal["operator", "phone"] = "operator"
    detail: str = Field(min_length=1, max_length=500)


class UndoRequest(Body):
    reason: str = Field(min_length=1, max_length=500)


class MovedCounts(BaseModel):
    identities: int
    follows: int
    tags_gained: int
    phones: int


class MergeView(BaseModel):
    merge_id: str
    survivor_id: str
    merged_id: str
    reason: str
    detail: str
    unionid_known: bool
    source_event_id: str | None
    moved: MovedCounts
    created_at: datetime
    undone_at: datetime | None
    undo_reason: str | None

    @classmethod
    def of(cls, m: Any) -> MergeView:
        moved = m["moved"]
        return cls(
            merge_id=str(m["id"]),
            survivor_id=str(m["survivor_id"]),
            merged_id=str(m["merged_id"]),
            reason=m["reason"],
            detail=m["detail"],
            unionid_known=m["unionid"] is not None,
            source_event_id=str(m["source_event_id"]) if m["source_event_id"] else None,
            moved=MovedCounts(
                identities=len(moved.get("identities", [])),
                follows=len(moved.get("follows", [])),
                tags_gained=len(moved.get("tags_gained", [])),
                phones=len(moved.get("phones", [])),
            ),
            created_at=m["created_at"],
            undone_at=m["undone_at"],
            undo_reason=m["undo_reason"],
        )


# The member view, as documentation: the answer is built as JSON by one SQL statement
# (members/repository.py, _VIEW_BODY) and sent as it comes.
class IdentityView(BaseModel):
    appid: str
    app_kind: str
    openid: str
    learned_via: str
    unionid_via: str | None
    first_seen: datetime
    last_seen: datetime


class FollowView(BaseModel):
    appid: str
    subscribed: bool
    subscribed_at: datetime | None
    unsubscribed_at: datetime | None
    first_subscribed_at: datetime | None
    subscribe_count: int
    first_scene: str | None
    last_scene: str | None


class ProfileView(BaseModel):
    product_views: int
    add_to_carts: int
    shares: int
    article_reads: int
    orders: int
    spent_fen: int
    gifts_sent: int
    gifts_received: int
    last_order_at: datetime | None
    last_active_at: datetime | None


class MemberView(BaseModel):
    member_id: str
    unionid_known: bool
    source: str
    first_scene: str | None
    created_at: datetime
    identities: list[IdentityView]
    follows: list[FollowView]
    tags: list[str]
    phone_masked: str | None
    phone_country_code: str | None
    profile: ProfileView
    resolved_from: str | None = Field(default=None, description="present only when the id asked for was merged away")
