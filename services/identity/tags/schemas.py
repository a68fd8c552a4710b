"""Tag and segment requests and answers, and the definitions of the rule tags."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

TagName = Annotated[str, Field(max_length=32)]


@dataclass(frozen=True)
class RuleTag:
    name: str
    description: str
    priority: int
    # Mirrored onto the service account's WeChat user tags (menus and mass sends select by them).
    wechat_sync: bool = False


# The rules themselves are one set-based statement (tags/repository.py, _REFRESH_RULES), so a sweep
# over every member is a few statements, not a few per member.
RULE_TAGS: tuple[RuleTag, ...] = (
    RuleTag("new_member", "新人: joined within the last 30 days", 10, wechat_sync=True),
    RuleTag("frequent_buyer", "常购: 3 or more paid orders", 20, wechat_sync=True),
    RuleTag("buyer", "已购: at least one paid order", 30, wechat_sync=True),
    RuleTag("gift_giver", "送礼人: sent at least one gift", 40),
    RuleTag("gift_receiver", "收礼人: received at least one gift", 50),
    RuleTag("follower", "粉丝: follows a service account now", 60),
    RuleTag("lapsed", "沉睡: no activity for 90 days", 70),
)
RULE_TAG_NAMES = frozenset(r.name for r in RULE_TAGS)
# What the rules say of a member created this instant (no orders, no follow yet, active now).
NEW_MEMBER_RULE_TAGS = ("new_member",)


@dataclass(frozen=True)
class RulePolicy:
    new_member_days: int = 30
    frequent_buyer_orders: int = 3
    lapsed_days: int = 90


DEFAULT_POLICY = RulePolicy()


def rule_tag_values_sql() -> str:
    """The rule tags as a SQL ``VALUES`` list (constants of this module, never input)."""

    def quote(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    rows = [f"({quote(r.name)}, {quote(r.description)}, {r.priority}, {str(r.wechat_sync).lower()})" for r in RULE_TAGS]
    return "VALUES " + ", ".join(rows)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TagChange(_Body):
    add: list[TagName] = Field(default_factory=list, max_length=20)
    remove: list[TagName] = Field(default_factory=list, max_length=20)
    operator: str = Field(min_length=1, max_length=64)


class NewTag(_Body):
    name: str = Field(min_length=1, max_length=32)
    description: str = Field(default="", max_length=200)
    wechat_sync: bool = False
    priority: int = Field(default=100, ge=0, le=1000)


class NewSegment(_Body):
    name: str = Field(pattern=r"^[\w\-]{1,64}$")
    description: str = Field(default="", max_length=200)
    all_tags: list[TagName] = Field(default_factory=list, max_length=10)
    any_tags: list[TagName] = Field(default_factory=list, max_length=10)
    none_tags: list[TagName] = Field(default_factory=list, max_length=10)


class RulesRefresh(_Body):
    after: uuid.UUID | None = None
    limit: int = Field(default=500, ge=1, le=5000)


class TagView(BaseModel):
    name: str
    kind: str
    description: str
    wechat_sync: bool
    priority: int


class SegmentView(BaseModel):
    name: str
    description: str
    all_tags: list[str]
    any_tags: list[str]
    none_tags: list[str]


class MemberTagsView(BaseModel):
    member_id: str
    tags: list[str]


class RulesRefreshed(BaseModel):
    refreshed: int
    changed: int
    next_after: str | None
