"""Tags and segments.

Two kinds of tag:

* **rule** tags are computed from what identity knows (profile counters, follow state, age) by
  :func:`evaluate_rules`; :meth:`Tagging.refresh_rules` makes a member's rule tags equal to the
  result. Nobody sets them by hand.
* **operator** tags are set and removed by people through the internal API.

A segment is a saved tag query (all of / any of / none of), listed page by page.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.identity.models import Member, Profile, Segment, Tag
from services.identity.repository import MemberRepository
from shared.errors import Conflict, NotFound, Unprocessable
from shared.events import MemberTagsChanged


@dataclass(frozen=True)
class RuleTag:
    name: str
    description: str
    priority: int
    # Mirrored onto the service account's WeChat user tags (menus and mass sends select by them).
    wechat_sync: bool = False


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


@dataclass(frozen=True)
class RulePolicy:
    new_member_days: int = 30
    frequent_buyer_orders: int = 3
    lapsed_days: int = 90


DEFAULT_POLICY = RulePolicy()

# Tag names: letters (any script), digits, _ and -; WeChat's own limit (30 bytes) is checked for
# tags that are synced there.
TAG_NAME = re.compile(r"^[\w\-]{1,32}$")
WECHAT_TAG_NAME_BYTES = 30


def evaluate_rules(
    member: Member, profile: Profile, *, following: bool, now: datetime, policy: RulePolicy = DEFAULT_POLICY
) -> set[str]:
    tags: set[str] = set()
    if member.created_at >= now - timedelta(days=policy.new_member_days):
        tags.add("new_member")
    if following:
        tags.add("follower")
    if profile.orders >= 1:
        tags.add("buyer")
    if profile.orders >= policy.frequent_buyer_orders:
        tags.add("frequent_buyer")
    if profile.gifts_sent >= 1:
        tags.add("gift_giver")
    if profile.gifts_received >= 1:
        tags.add("gift_receiver")
    last_active = max(t for t in (member.created_at, profile.last_active_at, profile.last_order_at) if t is not None)
    if last_active < now - timedelta(days=policy.lapsed_days):
        tags.add("lapsed")
    return tags


class Tagging:
    def __init__(self, repo: MemberRepository, policy: RulePolicy = DEFAULT_POLICY) -> None:
        self.repo = repo
        self.policy = policy

    async def ensure_rule_tags(self) -> dict[str, Tag]:
        found = {t.name: t for t in await self.repo.tags_named(RULE_TAG_NAMES)}
        if len(found) == len(RULE_TAGS):
            # The common case: insert nothing. An INSERT ... ON CONFLICT DO NOTHING would still take
            # a value from the tags id sequence per row, on every refresh of every member.
            return found
        await self.repo.ensure_tags(
            {
                "name": r.name,
                "kind": "rule",
                "description": r.description,
                "priority": r.priority,
                "wechat_sync": r.wechat_sync,
            }
            for r in RULE_TAGS
            if r.name not in found
        )
        return {t.name: t for t in await self.repo.tags_named(RULE_TAG_NAMES)}

    async def refresh_rules(self, member: Member, now: datetime) -> MemberTagsChanged | None:
        """Make ``member``'s rule tags what the rules say now; the change, if any."""
        if member.merged_into is not None:
            return None
        rule_tags = await self.ensure_rule_tags()
        profile = await self.repo.profile(member.id)
        following = any(f.subscribed for f in await self.repo.follows_of(member.id))
        wanted = evaluate_rules(member, profile, following=following, now=now, policy=self.policy)
        current = {t.name for _, t in await self.repo.member_tags(member.id) if t.kind == "rule"}
        added = await self.repo.add_member_tags(member.id, (rule_tags[n].id for n in wanted - current), "rules")
        removed = await self.repo.remove_member_tags(member.id, (rule_tags[n].id for n in current - wanted))
        if not added and not removed:
            return None
        by_id = {t.id: t.name for t in rule_tags.values()}
        return MemberTagsChanged(
            member_id=str(member.id),
            added=sorted(by_id[i] for i in added),
            removed=sorted(by_id[i] for i in removed),
            by="rules",
        )

    # --- operator tags ---------------------------------------------------------------------------

    async def create_tag(self, name: str, *, description: str, wechat_sync: bool, priority: int) -> Tag:
        if not TAG_NAME.match(name):
            raise Unprocessable("a tag name is 1-32 letters, digits, _ or -")
        if wechat_sync and len(name.encode()) > WECHAT_TAG_NAME_BYTES:
            raise Unprocessable(f"a tag synced to WeChat has at most {WECHAT_TAG_NAME_BYTES} bytes (UTF-8)")
        if name in RULE_TAG_NAMES or await self.repo.tag(name) is not None:
            raise Conflict(f"tag {name} exists")
        tag = Tag(name=name, kind="operator", description=description, wechat_sync=wechat_sync, priority=priority)
        self.repo.add_tag(tag)
        await self.repo.flush()
        return tag

    async def set_operator_tags(
        self, member: Member, *, add: list[str], remove: list[str], operator: str
    ) -> MemberTagsChanged | None:
        names = set(add) | set(remove)
        known = {t.name: t for t in await self.repo.tags_named(names)}
        missing = sorted(names - set(known))
        if missing:
            raise NotFound(f"no such tag: {', '.join(missing)}")
        rule = sorted(n for n in names if known[n].kind == "rule")
        if rule:
            raise Unprocessable(f"rule tags are computed, not set: {', '.join(rule)}")
        added = await self.repo.add_member_tags(member.id, (known[n].id for n in add), f"operator:{operator}")
        removed = await self.repo.remove_member_tags(member.id, (known[n].id for n in remove))
        if not added and not removed:
            return None
        by_id = {t.id: t.name for t in known.values()}
        return MemberTagsChanged(
            member_id=str(member.id),
            added=sorted(by_id[i] for i in added),
            removed=sorted(by_id[i] for i in removed),
            by="operator",
        )

    # --- segments --------------------------------------------------------------------------------

    async def create_segment(
        self, name: str, *, description: str, all_tags: list[str], any_tags: list[str], none_tags: list[str]
    ) -> Segment:
        if await self.repo.segment(name) is not None:
            raise Conflict(f"segment {name} exists")
        await self.ensure_rule_tags()
        names = set(all_tags) | set(any_tags) | set(none_tags)
        if not names:
            raise Unprocessable("a segment needs at least one tag")
        missing = sorted(names - {t.name for t in await self.repo.tags_named(names)})
        if missing:
            raise Unprocessable(f"no such tag: {', '.join(missing)}")
        segment = Segment(
            name=name,
            description=description,
            all_tags=sorted(set(all_tags)),
            any_tags=sorted(set(any_tags)),
            none_tags=sorted(set(none_tags)),
        )
        self.repo.add_segment(segment)
        await self.repo.flush()
        return segment

    async def members_page(
        self,
        *,
        tag: str | None,
        segment: str | None,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[uuid.UUID]:
        if (tag is None) == (segment is None):
            raise Unprocessable("give exactly one of tag or segment")
        if tag is not None:
            return await self.repo.members_page(all_tags=[tag], after=after, limit=limit)
        seg = await self.repo.segment(segment or "")
        if seg is None:
            raise NotFound(f"no segment {segment}")
        return await self.repo.members_page(
            all_tags=seg.all_tags, any_tags=seg.any_tags, none_tags=seg.none_tags, after=after, limit=limit
        )
