"""SQL for tags, segments and rule evaluation (one statement per method)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.identity.tags.schemas import RULE_TAGS, RulePolicy, rule_tag_values_sql

# The rule tags exist in every database that needs them: inserted when missing. NOT EXISTS first,
# so the common case takes no value from the tags id sequence (ON CONFLICT alone would, each time).
ENSURE_RULE_TAGS_CTE = f"""
ensured AS (
    INSERT INTO tags (name, kind, description, priority, wechat_sync)
    SELECT v.name, 'rule', v.description, v.priority, v.wechat_sync
    FROM ({rule_tag_values_sql()}) AS v (name, description, priority, wechat_sync)
    WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name)
    ON CONFLICT (name) DO NOTHING
    RETURNING id, name
),
rule_tags AS (
    SELECT id, name FROM tags WHERE kind = 'rule'
    UNION ALL
    SELECT id, name FROM ensured
)"""

_ENSURE_RULE_TAGS = f"WITH {ENSURE_RULE_TAGS_CTE} SELECT count(*) FROM ensured"

# Every rule for a set of live members at once: what the rules want, what they have, the difference
# written, and the net change per member returned. $1 member ids (NULL: a keyset page of every live
# member after $2, $3 of them); $4..$6 the policy.
_REFRESH_RULES = f"""
WITH {ENSURE_RULE_TAGS_CTE},
m AS (
    SELECT id, created_at FROM members
    WHERE merged_into IS NULL
      AND CASE WHEN $1::uuid[] IS NULL THEN id > coalesce($2::uuid, '00000000-0000-0000-0000-000000000000')
               ELSE id = ANY($1::uuid[]) END
    ORDER BY id
    LIMIT CASE WHEN $1::uuid[] IS NULL THEN $3::int END
),
wanted AS (
    SELECT m.id AS member_id, rt.id AS tag_id, rt.name
    FROM m
    LEFT JOIN profiles p ON p.member_id = m.id
    CROSS JOIN LATERAL (VALUES
        ('new_member', m.created_at >= now() - make_interval(days => $4::int)),
        ('follower', EXISTS (SELECT 1 FROM follows f WHERE f.member_id = m.id AND f.subscribed)),
        ('buyer', coalesce(p.orders, 0) >= 1),
        ('frequent_buyer', coalesce(p.orders, 0) >= $5::int),
        ('gift_giver', coalesce(p.gifts_sent, 0) >= 1),
        ('gift_receiver', coalesce(p.gifts_received, 0) >= 1),
        ('lapsed', greatest(m.created_at, p.last_active_at, p.last_order_at) < now() - make_interval(days => $6::int))
    ) AS r (name, holds)
    JOIN rule_tags rt ON rt.name = r.name
    WHERE r.holds
),
held AS (
    SELECT mt.member_id, mt.tag_id, rt.name
    FROM member_tags mt JOIN rule_tags rt ON rt.id = mt.tag_id
    WHERE mt.member_id IN (SELECT id FROM m)
),
added AS (
    INSERT INTO member_tags (member_id, tag_id, added_by)
    SELECT w.member_id, w.tag_id, 'rules' FROM wanted w
    WHERE NOT EXISTS (SELECT 1 FROM held h WHERE h.member_id = w.member_id AND h.tag_id = w.tag_id)
    ON CONFLICT DO NOTHING
    RETURNING member_id, tag_id
),
removed AS (
    DELETE FROM member_tags mt USING held h
    WHERE mt.member_id = h.member_id AND mt.tag_id = h.tag_id
      AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.member_id = h.member_id AND w.tag_id = h.tag_id)
    RETURNING mt.member_id, mt.tag_id
),
changes AS (
    SELECT a.member_id, rt.name, true AS is_added FROM added a JOIN rule_tags rt ON rt.id = a.tag_id
    UNION ALL
    SELECT r.member_id, rt.name, false FROM removed r JOIN rule_tags rt ON rt.id = r.tag_id
)
SELECT NULL::uuid AS member_id, NULL::text[] AS added, NULL::text[] AS removed,
       (SELECT count(*) FROM m) AS seen, (SELECT id FROM m ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM rule_tags) AS rule_tags
UNION ALL
SELECT member_id,
       coalesce(array_agg(name ORDER BY name) FILTER (WHERE is_added), '{{}}'),
       coalesce(array_agg(name ORDER BY name) FILTER (WHERE NOT is_added), '{{}}'),
       NULL, NULL, NULL
FROM changes GROUP BY member_id
"""

# A member's tier as one tag ``tier_<name>`` (kind 'tier'; synced to WeChat so conditional menus can
# target it): the tag is made on first use (DO UPDATE returns its id even when another transaction
# made it first), the member's other tier tags go, this one is added with the time commerce decided
# it ($4). A change older than the tier tag the member holds (a late retry) changes nothing.
# Added and removed names back.
_SET_TIER = """
WITH tag AS (
    INSERT INTO tags AS t (name, kind, description, wechat_sync, priority)
    VALUES ($2, 'tier', $3, true, 5)
    ON CONFLICT (name) DO UPDATE SET kind = t.kind
    RETURNING id, name
),
newer AS (
    SELECT 1 FROM member_tags mt JOIN tags o ON o.id = mt.tag_id
    WHERE mt.member_id = $1 AND o.kind = 'tier' AND mt.added_at > $4
),
removed AS (
    DELETE FROM member_tags mt USING tags o
    WHERE mt.member_id = $1 AND o.id = mt.tag_id AND o.kind = 'tier' AND o.name <> $2
      AND NOT EXISTS (SELECT 1 FROM newer)
    RETURNING o.name
),
added AS (
    INSERT INTO member_tags (member_id, tag_id, added_by, added_at) SELECT $1, id, 'tier', $4 FROM tag
    WHERE NOT EXISTS (SELECT 1 FROM newer)
    ON CONFLICT DO NOTHING
    RETURNING tag_id
)
SELECT (SELECT coalesce(array_agg(name), '{}') FROM tag WHERE EXISTS (SELECT 1 FROM added)) AS added,
       (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM removed) AS removed
"""

_TAGS_NAMED = "SELECT id, name, kind FROM tags WHERE name = ANY($1::text[])"

_ALL_TAGS = "SELECT name, kind, description, wechat_sync, priority FROM tags ORDER BY priority, name"

_CREATE_TAG = """
INSERT INTO tags (name, kind, description, wechat_sync, priority) VALUES ($1, 'operator', $2, $3, $4)
ON CONFLICT (name) DO NOTHING
RETURNING name, kind, description, wechat_sync, priority
"""

_ADD_MEMBER_TAGS = """
INSERT INTO member_tags (member_id, tag_id, added_by) SELECT $1, unnest($2::int[]), $3
ON CONFLICT DO NOTHING RETURNING tag_id
"""

_REMOVE_MEMBER_TAGS = "DELETE FROM member_tags WHERE member_id = $1 AND tag_id = ANY($2::int[]) RETURNING tag_id"

_TAG_NAMES_OF = """
SELECT t.name FROM member_tags mt JOIN tags t ON t.id = mt.tag_id WHERE mt.member_id = $1 ORDER BY t.priority, t.name
"""

_SEGMENT = "SELECT name, description, all_tags, any_tags, none_tags FROM segments WHERE name = $1"
_SEGMENTS = "SELECT name, description, all_tags, any_tags, none_tags FROM segments ORDER BY name"
_CREATE_SEGMENT = """
INSERT INTO segments (name, description, all_tags, any_tags, none_tags) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO NOTHING
RETURNING name, description, all_tags, any_tags, none_tags
"""

# A page of live members matching a tag query, with what the list shows of each, as one JSON array.
_MEMBERS_PAGE = """
WITH wanted AS (
    SELECT m.id FROM members m
    WHERE m.merged_into IS NULL
      AND ($4::uuid IS NULL OR m.id > $4)
      AND NOT EXISTS (
          SELECT 1 FROM unnest($1::text[]) AS a (name)
          WHERE NOT EXISTS (SELECT 1 FROM member_tags mt JOIN tags t ON t.id = mt.tag_id
                            WHERE mt.member_id = m.id AND t.name = a.name))
      AND (cardinality($2::text[]) = 0 OR EXISTS (
          SELECT 1 FROM member_tags mt JOIN tags t ON t.id = mt.tag_id
          WHERE mt.member_id = m.id AND t.name = ANY($2::text[])))
      AND NOT EXISTS (
          SELECT 1 FROM member_tags mt JOIN tags t ON t.id = mt.tag_id
          WHERE mt.member_id = m.id AND t.name = ANY($3::text[]))
    ORDER BY m.id
    LIMIT $5
)
SELECT coalesce(json_agg(json_build_object(
    'member_id', w.id,
    'tags', coalesce((SELECT json_agg(t.name ORDER BY t.priority, t.name) FROM member_tags mt
                      JOIN tags t ON t.id = mt.tag_id WHERE mt.member_id = w.id), '[]'),
    'identities', coalesce((SELECT json_agg(json_build_object('appid', i.appid, 'app_kind', i.app_kind,
                                                              'openid', i.openid) ORDER BY i.id)
                            FROM app_identities i WHERE i.member_id = w.id), '[]'),
    'following', coalesce((SELECT json_agg(f.appid ORDER BY f.appid) FROM follows f
                           WHERE f.member_id = w.id AND f.subscribed), '[]')
) ORDER BY w.id), '[]')::text,
count(*), max(w.id::text)
FROM wanted w
"""


class TagRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def ensure_rule_tags(self) -> int:
        """Insert the rule tags a database lacks; how many were missing."""
        return int(await self.conn.fetchval(_ENSURE_RULE_TAGS))

    async def refresh_rules(
        self,
        policy: RulePolicy,
        *,
        member_ids: Sequence[uuid.UUID] | None = None,
        after: uuid.UUID | None = None,
        limit: int = 0,
    ) -> tuple[int, uuid.UUID | None, list[asyncpg.Record]]:
        """Make rule tags what the rules say for ``member_ids`` (or a keyset page of every live
        member): (members seen, the page's last id, the net changes as (member_id, added, removed))."""
        ids = list(member_ids) if member_ids is not None else None
        args = (ids, after, limit, policy.new_member_days, policy.frequent_buyer_orders, policy.lapsed_days)
        rows = await self.conn.fetch(_REFRESH_RULES, *args)
        if rows[0]["rule_tags"] < len(RULE_TAGS):
            # A concurrent transaction created the missing rule tags first (a new database): its rows
            # were not in this statement's snapshot, so it wrote too little. The statement again (a
            # new snapshot, read committed) sees them and writes the rest.
            rows = await self.conn.fetch(_REFRESH_RULES, *args)
        head, changes = rows[0], rows[1:]
        return int(head["seen"]), head["last_id"], changes

    async def tags_named(self, names: Sequence[str]) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_TAGS_NAMED, sorted(set(names))))

    async def all_tags(self) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_ALL_TAGS))

    async def create_tag(
        self, name: str, *, description: str, wechat_sync: bool, priority: int
    ) -> asyncpg.Record | None:
        """The new tag, or None when the name is taken."""
        return await self.conn.fetchrow(_CREATE_TAG, name, description, wechat_sync, priority)

    async def add_member_tags(self, member_id: uuid.UUID, tag_ids: Sequence[int], added_by: str) -> list[int]:
        if not tag_ids:
            return []
        return [r["tag_id"] for r in await self.conn.fetch(_ADD_MEMBER_TAGS, member_id, sorted(set(tag_ids)), added_by)]

    async def remove_member_tags(self, member_id: uuid.UUID, tag_ids: Sequence[int]) -> list[int]:
        if not tag_ids:
            return []
        return [r["tag_id"] for r in await self.conn.fetch(_REMOVE_MEMBER_TAGS, member_id, sorted(set(tag_ids)))]

    async def set_tier(
        self, member_id: uuid.UUID, tag_name: str, description: str, decided_at: datetime
    ) -> tuple[list[str], list[str]]:
        """The member's tier tag is ``tag_name`` alone, unless a newer one is held: (added, removed)."""
        row = await self.conn.fetchrow(_SET_TIER, member_id, tag_name, description, decided_at)
        assert row is not None
        return list(row["added"]), list(row["removed"])

    async def tag_names_of(self, member_id: uuid.UUID) -> list[str]:
        return [r["name"] for r in await self.conn.fetch(_TAG_NAMES_OF, member_id)]

    async def segment(self, name: str) -> asyncpg.Record | None:
        return await self.conn.fetchrow(_SEGMENT, name)

    async def segments(self) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_SEGMENTS))

    async def create_segment(
        self, name: str, *, description: str, all_tags: list[str], any_tags: list[str], none_tags: list[str]
    ) -> asyncpg.Record | None:
        return await self.conn.fetchrow(_CREATE_SEGMENT, name, description, all_tags, any_tags, none_tags)

    async def members_page(
        self,
        *,
        all_tags: Sequence[str],
        any_tags: Sequence[str],
        none_tags: Sequence[str],
        after: uuid.UUID | None,
        limit: int,
    ) -> tuple[str, int, str | None]:
        """(the page as a JSON array, its size, its last member id)."""
        row: Any = await self.conn.fetchrow(
            _MEMBERS_PAGE, list(all_tags), list(any_tags), list(none_tags), after, limit
        )
        return str(row[0]), int(row[1]), row[2]
