"""SQL for members, app identities, merges and the member view (one statement per method).

Statements that decide a link or a merge run after the advisory locks were granted (a separate,
earlier statement), so under READ COMMITTED they see what is committed now.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.identity.models import PROFILE_COUNTERS
from services.identity.tags.repository import ENSURE_RULE_TAGS_CTE
from shared.bus.outbox import NOTIFY_CHANNEL, Outbox, OutgoingEvent

MAX_MERGE_CHAIN = 32

# Sorted by the caller, taken in that order: two transactions never wait on each other in a cycle.
_LOCK = "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($1::text[]) AS k"
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1)"

_MEMBER_COLUMNS = "id, unionid, source, first_scene, merged_into, created_at"
_MEMBER = f"SELECT {_MEMBER_COLUMNS} FROM members WHERE id = $1"
_BY_UNIONID = f"SELECT {_MEMBER_COLUMNS} FROM members WHERE unionid = $1"
# A merged id keeps resolving: follow the tombstones (bounded) to the live member.
_CHAIN = f"""
WITH RECURSIVE chain (id, merged_into, depth) AS (
    SELECT id, merged_into, 0 FROM members WHERE id = $1
    UNION ALL
    SELECT m.id, m.merged_into, c.depth + 1 FROM chain c JOIN members m ON m.id = c.merged_into
    WHERE c.depth < {MAX_MERGE_CHAIN}
)"""
_LIVE_MEMBER = f"""{_CHAIN}
SELECT {", ".join("m." + c.strip() for c in _MEMBER_COLUMNS.split(","))}
FROM chain c JOIN members m ON m.id = c.id WHERE c.merged_into IS NULL
"""

_IDENTITY = "SELECT id, member_id, appid, openid, unionid FROM app_identities WHERE appid = $1 AND openid = $2"

# A member, its profile and its first identity: one statement. $9 the sealed session key, if any.
_CREATE_MEMBER = """
WITH m AS (
    INSERT INTO members (id, unionid, source, first_scene) VALUES ($1, $2::text, $3::text, $4)
    RETURNING id, created_at
), p AS (
    INSERT INTO profiles (member_id) SELECT id FROM m
), i AS (
    INSERT INTO app_identities (member_id, appid, app_kind, openid, unionid, learned_via, unionid_via, unionid_at,
                                first_seen, last_seen, session_key_enc, session_key_at)
    SELECT id, $5, $6, $7, $2::text, $3::text, CASE WHEN $2::text IS NULL THEN NULL ELSE $3::text END,
           CASE WHEN $2::text IS NULL THEN NULL ELSE $8::timestamptz END, $8, $8,
           $9::bytea, CASE WHEN $9::bytea IS NULL THEN NULL ELSE $8::timestamptz END
    FROM m
    RETURNING id
)
SELECT (SELECT id FROM i) AS identity_id, created_at FROM m
"""

_ADD_IDENTITY = """
INSERT INTO app_identities (member_id, appid, app_kind, openid, unionid, learned_via, unionid_via, unionid_at,
                            first_seen, last_seen, session_key_enc, session_key_at)
VALUES ($1, $2, $3, $4, $5::text, $6::text, CASE WHEN $5::text IS NULL THEN NULL ELSE $6::text END,
        CASE WHEN $5::text IS NULL THEN NULL ELSE $7::timestamptz END, $7::timestamptz, $7::timestamptz,
        $8::bytea, CASE WHEN $8::bytea IS NULL THEN NULL ELSE $7::timestamptz END)
RETURNING id
"""

_LEARN_IDENTITY_UNIONID = """
UPDATE app_identities SET unionid = $2, unionid_via = $3, unionid_at = $4 WHERE id = $1 AND unionid IS NULL
"""
_SET_MEMBER_UNIONID = "UPDATE members SET unionid = $2, updated_at = now() WHERE id = $1"
_SET_FIRST_SCENE = "UPDATE members SET first_scene = $2, updated_at = now() WHERE id = $1 AND first_scene IS NULL"
_TOUCH_IDENTITY = """
UPDATE app_identities
SET last_seen = greatest(last_seen, $2),
    session_key_enc = coalesce($3::bytea, session_key_enc),
    session_key_at = CASE WHEN $3::bytea IS NULL THEN session_key_at ELSE $2 END
WHERE id = $1
"""

# --- the hot paths: one statement each, outside any transaction ------------------------------------

# A known identity: touch it (and the member's activity when $5), answer what decides whether
# anything else is needed. A concurrent merge holds the identity row: this waits for it and then
# returns the moved member_id.
_TOUCH_KNOWN = """
WITH i AS (
    UPDATE app_identities
    SET last_seen = greatest(last_seen, $3),
        session_key_enc = coalesce($4::bytea, session_key_enc),
        session_key_at = CASE WHEN $4::bytea IS NULL THEN session_key_at ELSE $3 END
    WHERE appid = $1 AND openid = $2
    RETURNING member_id, unionid
), p AS (
    UPDATE profiles SET last_active_at = greatest(last_active_at, $3)
    WHERE $5 AND member_id = (SELECT member_id FROM i)
)
SELECT i.member_id, i.unionid AS identity_unionid, m.unionid AS member_unionid, m.merged_into IS NOT NULL AS merged,
       EXISTS (SELECT 1 FROM member_tags mt JOIN tags t ON t.id = mt.tag_id
               WHERE mt.member_id = i.member_id AND t.name = 'lapsed') AS lapsed
FROM i JOIN members m ON m.id = i.member_id
"""

# A new member with its identity, profile, rule tags and events, optimistically: the person locks
# are taken first (the insert reads from them), and a unionid someone holds or an identity created
# meanwhile fails the whole statement on a unique constraint: the caller then takes the locked path.
_CREATE_FAST = f"""
WITH locked AS (
    SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) AS n FROM unnest($10::text[]) AS k
), m AS (
    INSERT INTO members (id, unionid, source, first_scene) SELECT $1, $2::text, $3::text, $4 FROM locked
    RETURNING id, created_at
), p AS (
    INSERT INTO profiles (member_id, last_active_at) SELECT id, CASE WHEN $11::bool THEN $8::timestamptz END FROM m
), i AS (
    INSERT INTO app_identities (member_id, appid, app_kind, openid, unionid, learned_via, unionid_via, unionid_at,
                                first_seen, last_seen, session_key_enc, session_key_at)
    SELECT id, $5, $6, $7, $2::text, $3::text, CASE WHEN $2::text IS NULL THEN NULL ELSE $3::text END,
           CASE WHEN $2::text IS NULL THEN NULL ELSE $8::timestamptz END, $8, $8,
           $9::bytea, CASE WHEN $9::bytea IS NULL THEN NULL ELSE $8::timestamptz END
    FROM m
), {ENSURE_RULE_TAGS_CTE},
t AS (
    INSERT INTO member_tags (member_id, tag_id, added_by)
    SELECT m.id, rt.id, 'rules' FROM m JOIN rule_tags rt ON rt.name = ANY($12::text[])
), o AS (
    INSERT INTO outbox (event_id, type, body, headers)
    SELECT * FROM unnest($13::uuid[], $14::text[], $15::bytea[], $16::jsonb[])
)
SELECT created_at, pg_notify('{NOTIFY_CHANNEL}', '') FROM m
"""

# --- the member view: one statement builds the JSON ----------------------------------------------

_VIEW_BODY = """
SELECT m.id, json_build_object(
    'member_id', m.id,
    'unionid_known', m.unionid IS NOT NULL,
    'source', m.source,
    'first_scene', m.first_scene,
    'created_at', m.created_at,
    'identities', coalesce((
        SELECT json_agg(json_build_object(
            'appid', i.appid, 'app_kind', i.app_kind, 'openid', i.openid, 'learned_via', i.learned_via,
            'unionid_via', i.unionid_via, 'first_seen', i.first_seen, 'last_seen', i.last_seen) ORDER BY i.id)
        FROM app_identities i WHERE i.member_id = m.id), '[]'),
    'follows', coalesce((
        SELECT json_agg(json_build_object(
            'appid', f.appid, 'subscribed', f.subscribed, 'subscribed_at', f.subscribed_at,
            'unsubscribed_at', f.unsubscribed_at, 'first_subscribed_at', f.first_subscribed_at,
            'subscribe_count', f.subscribe_count, 'first_scene', f.first_scene, 'last_scene', f.last_scene)
            ORDER BY f.id)
        FROM follows f WHERE f.member_id = m.id), '[]'),
    'tags', coalesce((
        SELECT json_agg(t.name ORDER BY t.priority, t.name)
        FROM member_tags mt JOIN tags t ON t.id = mt.tag_id WHERE mt.member_id = m.id), '[]'),
    'phone_masked', ph.masked,
    'phone_country_code', ph.country_code,
    'profile', json_build_object(
        'product_views', coalesce(p.product_views, 0), 'add_to_carts', coalesce(p.add_to_carts, 0),
        'shares', coalesce(p.shares, 0), 'article_reads', coalesce(p.article_reads, 0),
        'orders', coalesce(p.orders, 0), 'spent_fen', coalesce(p.spent_fen, 0),
        'gifts_sent', coalesce(p.gifts_sent, 0), 'gifts_received', coalesce(p.gifts_received, 0),
        'last_order_at', p.last_order_at, 'last_active_at', p.last_active_at)
)::text
FROM members m
LEFT JOIN profiles p ON p.member_id = m.id
LEFT JOIN LATERAL (
    SELECT masked, country_code FROM phones WHERE member_id = m.id ORDER BY bound_at DESC LIMIT 1
) ph ON true
"""

_VIEW = f"""{_CHAIN}
{_VIEW_BODY}
WHERE m.id = (SELECT id FROM chain WHERE merged_into IS NULL)
"""

# An identity always belongs to a live member (a merge moves it in the transaction that makes the
# tombstone), and one statement reads one snapshot: no chain to follow.
_VIEW_BY_IDENTITY = f"""
{_VIEW_BODY}
WHERE m.id = (SELECT member_id FROM app_identities WHERE appid = $1 AND openid = $2)
"""

# --- merges --------------------------------------------------------------------------------------

_MERGE_COLUMNS = (
    "id, survivor_id, merged_id, reason, detail, unionid, source_event_id, moved, created_at, undone_at, undo_reason"
)
_IDENTITIES_OF = "SELECT id, appid, openid FROM app_identities WHERE member_id = $1 ORDER BY id"
_FOLLOW_IDS_OF = "SELECT id FROM follows WHERE member_id = $1 ORDER BY id"
_MOVE_IDENTITIES = """
UPDATE app_identities SET member_id = $3 WHERE id = ANY($1::int[]) AND member_id = $2
RETURNING appid, app_kind, openid
"""
_MOVE_FOLLOWS = "UPDATE follows SET member_id = $3 WHERE id = ANY($1::int[]) AND member_id = $2"
_MOVE_FOLLOW_EVENTS = """
UPDATE follow_events SET member_id = $4
WHERE member_id = $3 AND (appid, openid) IN (SELECT a, o FROM unnest($1::text[], $2::text[]) AS x (a, o))
"""
_MEMBER_TAG_ROWS = "SELECT tag_id, added_by, added_at FROM member_tags WHERE member_id = $1 ORDER BY tag_id"
_RESTORE_MEMBER_TAGS = """
INSERT INTO member_tags (member_id, tag_id, added_by, added_at)
SELECT $1, t, b, a FROM unnest($2::int[], $3::text[], $4::timestamptz[]) AS x (t, b, a)
ON CONFLICT DO NOTHING
"""
_PHONES_OF = "SELECT e164 FROM phones WHERE member_id = $1 ORDER BY bound_at"
_MOVE_PHONES = "UPDATE phones SET member_id = $3 WHERE e164 = ANY($1::text[]) AND member_id = $2"
_PROFILE = f"SELECT {', '.join(PROFILE_COUNTERS)}, last_order_at, last_active_at FROM profiles WHERE member_id = $1"
_ADD_PROFILE_COUNTERS = (
    "UPDATE profiles SET "
    + ", ".join(f"{c} = greatest({c} + $2::int * ($3::bigint[])[{i + 1}], 0)" for i, c in enumerate(PROFILE_COUNTERS))
    + ", updated_at = now() WHERE member_id = $1"
)
_SET_PROFILE_STAMPS = (
    "UPDATE profiles SET last_order_at = $2, last_active_at = $3, updated_at = now() WHERE member_id = $1"
)
_BEHAVIOUR_ORIGINS = "SELECT DISTINCT origin_member_id FROM behaviour_events WHERE member_id = $1"
_MOVE_BEHAVIOUR = """
UPDATE behaviour_events SET member_id = $2
WHERE member_id = $1 AND ($3::uuid[] IS NULL OR origin_member_id = ANY($3::uuid[]))
"""
_MARK_MERGED = "UPDATE members SET merged_into = $2, merged_at = now(), updated_at = now() WHERE id = $1"
_UNMARK_MERGED = "UPDATE members SET merged_into = NULL, merged_at = NULL, updated_at = now() WHERE id = $1"
_CLEAR_FIRST_SCENE = "UPDATE members SET first_scene = NULL, updated_at = now() WHERE id = $1"
_INSERT_MERGE = f"""
INSERT INTO merges (id, survivor_id, merged_id, reason, detail, unionid, source_event_id, moved)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING {_MERGE_COLUMNS}
"""
_MERGE = f"SELECT {_MERGE_COLUMNS} FROM merges WHERE id = $1"
_MERGES_OF = f"SELECT {_MERGE_COLUMNS} FROM merges WHERE survivor_id = $1 OR merged_id = $1 ORDER BY created_at"
_MARK_UNDONE = f"UPDATE merges SET undone_at = now(), undo_reason = $2 WHERE id = $1 RETURNING {_MERGE_COLUMNS}"
_IS_BLOCKED = "SELECT EXISTS (SELECT 1 FROM merge_blocks WHERE member_a = $1 AND member_b = $2)"
_BLOCK = "INSERT INTO merge_blocks (member_a, member_b, merge_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
_MEMBER_EXISTS = "SELECT EXISTS (SELECT 1 FROM members WHERE id = $1)"


@dataclass(frozen=True, slots=True)
class MemberRow:
    id: uuid.UUID
    unionid: str | None
    source: str
    first_scene: str | None
    merged_into: uuid.UUID | None
    created_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record | None) -> MemberRow | None:
        return None if row is None else cls(*row.values())


@dataclass(frozen=True, slots=True)
class IdentityRow:
    id: int
    member_id: uuid.UUID
    appid: str
    openid: str
    unionid: str | None


@dataclass(frozen=True, slots=True)
class KnownIdentity:
    """What the one-statement touch of a known identity answers."""

    member_id: uuid.UUID
    identity_unionid: str | None
    member_unionid: str | None
    merged: bool
    lapsed: bool


class PersonLocks:
    """Transaction-scoped advisory locks that serialise work on one person (README, "Concurrency")."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock(self, keys: Sequence[str]) -> None:
        wanted = sorted({k for k in keys if k})
        if wanted:
            await self.conn.fetchval(_LOCK, wanted)

    async def try_lock(self, key: int) -> bool:
        """Without waiting: False when another transaction holds ``key``."""
        return bool(await self.conn.fetchval(_TRY_LOCK, key))


def person_keys(appid: str, openid: str, unionid: str | None) -> list[str]:
    return sorted(k for k in (unionid, f"{appid}:{openid}") if k)


def member_keys(*member_ids: uuid.UUID) -> list[str]:
    return sorted(f"member:{m}" for m in member_ids)


class MemberRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # --- members and identities ------------------------------------------------------------------

    async def member(self, member_id: uuid.UUID) -> MemberRow | None:
        return MemberRow.of(await self.conn.fetchrow(_MEMBER, member_id))

    async def live_member(self, member_id: uuid.UUID) -> MemberRow | None:
        """The member behind ``member_id``, following merge tombstones to the survivor."""
        return MemberRow.of(await self.conn.fetchrow(_LIVE_MEMBER, member_id))

    async def exists(self, member_id: uuid.UUID) -> bool:
        return bool(await self.conn.fetchval(_MEMBER_EXISTS, member_id))

    async def by_unionid(self, unionid: str) -> MemberRow | None:
        return MemberRow.of(await self.conn.fetchrow(_BY_UNIONID, unionid))

    async def identity(self, appid: str, openid: str) -> IdentityRow | None:
        row = await self.conn.fetchrow(_IDENTITY, appid, openid)
        return None if row is None else IdentityRow(*row.values())

    async def create_member(
        self,
        member_id: uuid.UUID,
        *,
        unionid: str | None,
        source: str,
        scene: str | None,
        appid: str,
        app_kind: str,
        openid: str,
        at: datetime,
        session_key_enc: bytes | None,
    ) -> int:
        """A member with its profile and first identity; the identity's id."""
        row: Any = await self.conn.fetchrow(
            _CREATE_MEMBER, member_id, unionid, source, scene, appid, app_kind, openid, at, session_key_enc
        )
        return int(row["identity_id"])

    async def add_identity(
        self,
        member_id: uuid.UUID,
        *,
        appid: str,
        app_kind: str,
        openid: str,
        unionid: str | None,
        learned_via: str,
        at: datetime,
        session_key_enc: bytes | None,
    ) -> int:
        return int(
            await self.conn.fetchval(
                _ADD_IDENTITY, member_id, appid, app_kind, openid, unionid, learned_via, at, session_key_enc
            )
        )

    async def learn_identity_unionid(self, identity_id: int, unionid: str, via: str, at: datetime) -> None:
        await self.conn.execute(_LEARN_IDENTITY_UNIONID, identity_id, unionid, via, at)

    async def set_member_unionid(self, member_id: uuid.UUID, unionid: str | None) -> None:
        await self.conn.execute(_SET_MEMBER_UNIONID, member_id, unionid)

    async def set_first_scene(self, member_id: uuid.UUID, scene: str) -> None:
        """The member's first attributed channel, when it has none yet."""
        await self.conn.execute(_SET_FIRST_SCENE, member_id, scene)

    async def clear_first_scene(self, member_id: uuid.UUID) -> None:
        await self.conn.execute(_CLEAR_FIRST_SCENE, member_id)

    async def touch_identity(self, identity_id: int, at: datetime, session_key_enc: bytes | None) -> None:
        """last_seen (never moved back by a late retry) and, from a login, the sealed session key."""
        await self.conn.execute(_TOUCH_IDENTITY, identity_id, at, session_key_enc)

    # --- hot paths -------------------------------------------------------------------------------

    async def touch_known(
        self, appid: str, openid: str, *, at: datetime, session_key_enc: bytes | None, activity: bool
    ) -> KnownIdentity | None:
        row = await self.conn.fetchrow(_TOUCH_KNOWN, appid, openid, at, session_key_enc, activity)
        return None if row is None else KnownIdentity(*row.values())

    async def create_fast(
        self,
        member_id: uuid.UUID,
        *,
        unionid: str | None,
        source: str,
        scene: str | None,
        appid: str,
        app_kind: str,
        openid: str,
        at: datetime,
        session_key_enc: bytes | None,
        activity: bool,
        rule_tags: Sequence[str],
        events: Sequence[OutgoingEvent],
    ) -> datetime:
        """One statement (autocommit): locks, member, profile, identity, rule tags, outbox rows.
        Raises ``asyncpg.UniqueViolationError`` when the unionid or the identity is taken."""
        row: Any = await self.conn.fetchrow(
            _CREATE_FAST,
            member_id,
            unionid,
            source,
            scene,
            appid,
            app_kind,
            openid,
            at,
            session_key_enc,
            person_keys(appid, openid, unionid),
            activity,
            list(rule_tags),
            *Outbox.columns(events),
        )
        created_at: datetime = row["created_at"]
        return created_at

    # --- views -----------------------------------------------------------------------------------

    async def view(self, member_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
        """(the live member's id, its view as JSON text), following tombstones."""
        row = await self.conn.fetchrow(_VIEW, member_id)
        return None if row is None else (row[0], row[1])

    async def view_by_identity(self, appid: str, openid: str) -> tuple[uuid.UUID, str] | None:
        row = await self.conn.fetchrow(_VIEW_BY_IDENTITY, appid, openid)
        return None if row is None else (row[0], row[1])


class MergeRepository:
    """What a merge moves from one member to another, and the merge log."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def identities_of(self, member_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_IDENTITIES_OF, member_id))

    async def follow_ids_of(self, member_id: uuid.UUID) -> list[int]:
        return [r["id"] for r in await self.conn.fetch(_FOLLOW_IDS_OF, member_id)]

    async def move_identities(
        self, ids: Sequence[int], *, from_member: uuid.UUID, to_member: uuid.UUID
    ) -> list[asyncpg.Record]:
        """Move these identities; the (appid, app_kind, openid) of each one moved."""
        if not ids:
            return []
        return list(await self.conn.fetch(_MOVE_IDENTITIES, list(ids), from_member, to_member))

    async def move_follows(self, ids: Sequence[int], *, from_member: uuid.UUID, to_member: uuid.UUID) -> None:
        if ids:
            await self.conn.execute(_MOVE_FOLLOWS, list(ids), from_member, to_member)

    async def move_follow_events(
        self, pairs: Sequence[tuple[str, str]], *, from_member: uuid.UUID, to_member: uuid.UUID
    ) -> None:
        if pairs:
            await self.conn.execute(
                _MOVE_FOLLOW_EVENTS, [p[0] for p in pairs], [p[1] for p in pairs], from_member, to_member
            )

    async def member_tag_rows(self, member_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_MEMBER_TAG_ROWS, member_id))

    async def restore_member_tags(self, member_id: uuid.UUID, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.conn.execute(
                _RESTORE_MEMBER_TAGS,
                member_id,
                [int(r["tag_id"]) for r in rows],
                [str(r["added_by"]) for r in rows],
                [datetime.fromisoformat(r["added_at"]) for r in rows],
            )

    async def phones_of(self, member_id: uuid.UUID) -> list[str]:
        return [r["e164"] for r in await self.conn.fetch(_PHONES_OF, member_id)]

    async def move_phones(self, e164s: Sequence[str], *, from_member: uuid.UUID, to_member: uuid.UUID) -> None:
        if e164s:
            await self.conn.execute(_MOVE_PHONES, list(e164s), from_member, to_member)

    async def profile(self, member_id: uuid.UUID) -> asyncpg.Record | None:
        return await self.conn.fetchrow(_PROFILE, member_id)

    async def add_profile_counters(self, member_id: uuid.UUID, counters: dict[str, int], sign: int = 1) -> None:
        await self.conn.execute(
            _ADD_PROFILE_COUNTERS, member_id, sign, [int(counters.get(c, 0)) for c in PROFILE_COUNTERS]
        )

    async def set_profile_stamps(
        self, member_id: uuid.UUID, *, last_order_at: datetime | None, last_active_at: datetime | None
    ) -> None:
        await self.conn.execute(_SET_PROFILE_STAMPS, member_id, last_order_at, last_active_at)

    async def behaviour_origins(self, member_id: uuid.UUID) -> list[uuid.UUID]:
        return [r[0] for r in await self.conn.fetch(_BEHAVIOUR_ORIGINS, member_id)]

    async def move_behaviour_events(
        self, *, from_member: uuid.UUID, to_member: uuid.UUID, origins: Sequence[uuid.UUID] | None = None
    ) -> None:
        if origins is not None and not origins:
            return
        await self.conn.execute(_MOVE_BEHAVIOUR, from_member, to_member, list(origins) if origins is not None else None)

    async def mark_merged(self, merged_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.conn.execute(_MARK_MERGED, merged_id, survivor_id)

    async def unmark_merged(self, member_id: uuid.UUID) -> None:
        await self.conn.execute(_UNMARK_MERGED, member_id)

    async def insert(
        self,
        merge_id: uuid.UUID,
        *,
        survivor_id: uuid.UUID,
        merged_id: uuid.UUID,
        reason: str,
        detail: str,
        unionid: str | None,
        source_event_id: uuid.UUID | None,
        moved: dict[str, Any],
    ) -> asyncpg.Record:
        row: asyncpg.Record = await self.conn.fetchrow(
            _INSERT_MERGE, merge_id, survivor_id, merged_id, reason, detail, unionid, source_event_id, moved
        )
        return row

    async def get(self, merge_id: uuid.UUID) -> asyncpg.Record | None:
        return await self.conn.fetchrow(_MERGE, merge_id)

    async def of_member(self, member_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_MERGES_OF, member_id))

    async def mark_undone(self, merge_id: uuid.UUID, reason: str) -> asyncpg.Record:
        row: asyncpg.Record = await self.conn.fetchrow(_MARK_UNDONE, merge_id, reason)
        return row

    async def is_blocked(self, a: uuid.UUID, b: uuid.UUID) -> bool:
        first, second = sorted([a, b], key=str)
        return bool(await self.conn.fetchval(_IS_BLOCKED, first, second))

    async def block(self, a: uuid.UUID, b: uuid.UUID, merge_id: uuid.UUID) -> None:
        first, second = sorted([a, b], key=str)
        await self.conn.execute(_BLOCK, first, second, merge_id)
