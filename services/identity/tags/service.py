"""Tags and segments.

Two kinds of tag:

* **rule** tags are computed from what identity knows (profile counters, follow state, age); the
  rules are one set-based statement (``TagRepository.refresh_rules``), the same for one member
  after a change and for a sweep over every member (time-based rules: new_member, lapsed).
* **operator** tags are set and removed by people through the internal API.

A segment is a saved tag query (all of / any of / none of), listed page by page.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from services.identity.tags.repository import TagRepository
from services.identity.tags.schemas import DEFAULT_POLICY, RULE_TAG_NAMES, RulePolicy
from shared.errors import Conflict, NotFound, Unprocessable
from shared.events import MemberTagsChanged
from shared.uow import UnitOfWork

# Tag names: letters (any script), digits, _ and -; WeChat's own limit (30 bytes) is checked for
# tags that are synced there.
TAG_NAME = re.compile(r"^[\w\-]{1,32}$")
WECHAT_TAG_NAME_BYTES = 30
# A member's tier (commerce's) is the tag tier_<name>: one per member, set only from commerce's events.
TIER_TAG_PREFIX = "tier_"


class TagService:
    def __init__(self, uow: UnitOfWork, policy: RulePolicy = DEFAULT_POLICY) -> None:
        self.uow = uow
        self.tags = TagRepository(uow.conn)
        self.policy = policy

    # --- rule tags -------------------------------------------------------------------------------

    async def refresh_rules(self, member_ids: Iterable[uuid.UUID]) -> int:
        """Make these members' rule tags what the rules say now (tombstones are skipped); publishes
        one ``identity.member.tags_changed`` per member that changed. How many changed."""
        ids = sorted(set(member_ids))
        if not ids:
            return 0
        _, _, changes = await self.tags.refresh_rules(self.policy, member_ids=ids)
        return self._publish(changes)

    async def refresh_page(self, *, after: uuid.UUID | None, limit: int) -> tuple[int, uuid.UUID | None, int]:
        """The sweep: one keyset page of every live member. (members seen, last id, members changed)."""
        seen, last, changes = await self.tags.refresh_rules(self.policy, after=after, limit=limit)
        return seen, last, self._publish(changes)

    def _publish(self, changes: list[asyncpg.Record]) -> int:
        for row in changes:
            self.uow.publish(
                MemberTagsChanged(
                    member_id=str(row["member_id"]), added=list(row["added"]), removed=list(row["removed"]), by="rules"
                )
            )
        return len(changes)

    # --- the tier tag ------------------------------------------------------------------------------

    async def set_tier(self, member_id: uuid.UUID, tier: str, decided_at: datetime) -> None:
        """commerce's tier as the member's one ``tier_<name>`` tag (menus and segments can use it);
        a change decided before the tier tag the member holds (a late retry) changes nothing."""
        name = f"{TIER_TAG_PREFIX}{tier}"
        if not TAG_NAME.match(name) or len(name.encode()) > WECHAT_TAG_NAME_BYTES:
            raise Unprocessable(f"tier {tier!r} does not make a tag name")
        added, removed = await self.tags.set_tier(member_id, name, f"会员等级 {tier} (commerce's tier)", decided_at)
        if added or removed:
            self.uow.publish(MemberTagsChanged(member_id=str(member_id), added=added, removed=removed, by="tier"))

    # --- operator tags ---------------------------------------------------------------------------

    async def create_tag(self, name: str, *, description: str, wechat_sync: bool, priority: int) -> dict[str, object]:
        if not TAG_NAME.match(name):
            raise Unprocessable("a tag name is 1-32 letters, digits, _ or -")
        if wechat_sync and len(name.encode()) > WECHAT_TAG_NAME_BYTES:
            raise Unprocessable(f"a tag synced to WeChat has at most {WECHAT_TAG_NAME_BYTES} bytes (UTF-8)")
        if name in RULE_TAG_NAMES:
            raise Conflict(f"tag {name} exists")
        if name.startswith(TIER_TAG_PREFIX):
            raise Unprocessable(f"tags named {TIER_TAG_PREFIX}... are members' tiers, set from commerce")
        row = await self.tags.create_tag(name, description=description, wechat_sync=wechat_sync, priority=priority)
        if row is None:
            raise Conflict(f"tag {name} exists")
        return dict(row)

    async def set_operator_tags(
        self, member_id: uuid.UUID, *, add: list[str], remove: list[str], operator: str
    ) -> None:
        """Add and remove operator tags on a live member (the caller resolved ``member_id``)."""
        if set(add) & set(remove):
            raise Unprocessable("a tag cannot be added and removed at once")
        names = set(add) | set(remove)
        known = {r["name"]: r for r in await self.tags.tags_named(sorted(names))}
        missing = sorted(names - set(known))
        if missing:
            raise NotFound(f"no such tag: {', '.join(missing)}")
        computed = sorted(n for n in names if known[n]["kind"] in ("rule", "tier"))
        if computed:
            raise Unprocessable(f"rule and tier tags are computed, not set: {', '.join(computed)}")
        added = await self.tags.add_member_tags(member_id, [known[n]["id"] for n in add], f"operator:{operator}")
        removed = await self.tags.remove_member_tags(member_id, [known[n]["id"] for n in remove])
        if added or removed:
            by_id = {r["id"]: name for name, r in known.items()}
            self.uow.publish(
                MemberTagsChanged(
                    member_id=str(member_id),
                    added=sorted(by_id[i] for i in added),
                    removed=sorted(by_id[i] for i in removed),
                    by="operator",
                )
            )

    # --- segments --------------------------------------------------------------------------------

    async def create_segment(
        self, name: str, *, description: str, all_tags: list[str], any_tags: list[str], none_tags: list[str]
    ) -> dict[str, object]:
        names = set(all_tags) | set(any_tags) | set(none_tags)
        if not names:
            raise Unprocessable("a segment needs at least one tag")
        await self.tags.ensure_rule_tags()
        missing = sorted(names - {r["name"] for r in await self.tags.tags_named(sorted(names))})
        if missing:
            raise Unprocessable(f"no such tag: {', '.join(missing)}")
        row = await self.tags.create_segment(
            name,
            description=description,
            all_tags=sorted(set(all_tags)),
            any_tags=sorted(set(any_tags)),
            none_tags=sorted(set(none_tags)),
        )
        if row is None:
            raise Conflict(f"segment {name} exists")
        return dict(row)
