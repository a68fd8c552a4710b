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


class FollowChanged(EventData):
    """A member followed, unfollowed or re-scanned the service account."""

    event_type: ClassVar[str] = "identity.follow.changed"

    member_id: str
    appid: str
    openid: str
    subscribed: bool
    scene: str | None = None
    change: str = Field(pattern="^(subscribe|unsubscribe|scan)$")
