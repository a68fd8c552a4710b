"""Events published by identity."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.events.envelope import EventData


class MemberRegistered(EventData):
    """A person became a member the first time any of the brand's apps met them."""

    event_type: ClassVar[str] = "identity.member.registered"

    member_id: str
    appid: str
    app_kind: str
    openid: str
    unionid: str | None = None
    source: str = Field(description="how we met them: oa_subscribe, mp_login, shop_order, ...")
    scene: str | None = Field(default=None, description="channel attribution, e.g. the QR scene")


class MemberMerged(EventData):
    """Two members turned out to be one person; ``merged_id`` now resolves to ``survivor_id``."""

    event_type: ClassVar[str] = "identity.member.merged"

    survivor_id: str
    merged_id: str
    reason: str
    unionid: str | None = None
    merge_id: str | None = Field(default=None, description="the merge log entry; an operator can undo it")


class FollowChanged(EventData):
    """A member followed, unfollowed or re-scanned the service account."""

    event_type: ClassVar[str] = "identity.follow.changed"

    member_id: str
    appid: str
    openid: str
    subscribed: bool
    scene: str | None = None
    change: str = Field(pattern="^(subscribe|unsubscribe|scan)$")


class MemberLinked(EventData):
    """An app identity joined an existing member (same unionid), e.g. a follower's first login."""

    event_type: ClassVar[str] = "identity.member.linked"

    member_id: str
    appid: str
    app_kind: str
    openid: str
    source: str = Field(description="how we met this identity: oa_subscribe, mp_login, shop_order, ...")


class MemberUnmerged(EventData):
    """An operator undid a merge: ``restored_id`` is its own member again, no longer ``survivor_id``."""

    event_type: ClassVar[str] = "identity.member.unmerged"

    survivor_id: str
    restored_id: str
    merge_id: str
    reason: str


class PhoneBound(EventData):
    """A member verified a phone number (only the masked form travels on the bus)."""

    event_type: ClassVar[str] = "identity.phone.bound"

    member_id: str
    phone_masked: str
    country_code: str


class MemberTagsChanged(EventData):
    """Tags were added to or removed from a member (by a rule or an operator)."""

    event_type: ClassVar[str] = "identity.member.tags_changed"

    member_id: str
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    by: str = Field(description="rules, operator, or merge")
