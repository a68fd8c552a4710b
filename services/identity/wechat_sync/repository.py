"""SQL for the WeChat mirror: job leases and cursors, tag mappings, (un)tagging attempts, menus.

Every method is one statement and runs on a connection in autocommit: each is its own short
transaction, and none is open while WeChat is called.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

# A lease, not a lock held across WeChat calls: the holder renews it as it goes; a crashed holder's
# lease runs out and the next run takes over (and resumes from the cursor).
_CLAIM = """
INSERT INTO wechat_sync_jobs (appid, job, lease_owner, lease_until, run_id, started_at, report)
VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, now(), '{}')
ON CONFLICT (appid, job) DO UPDATE SET
    lease_owner = $3, lease_until = now() + make_interval(secs => $4), updated_at = now(),
    run_id = CASE WHEN wechat_sync_jobs.cursor IS NULL THEN $5 ELSE wechat_sync_jobs.run_id END,
    started_at = CASE WHEN wechat_sync_jobs.cursor IS NULL THEN now() ELSE wechat_sync_jobs.started_at END,
    report = CASE WHEN wechat_sync_jobs.cursor IS NULL THEN '{}' ELSE wechat_sync_jobs.report END,
    finished_at = CASE WHEN wechat_sync_jobs.cursor IS NULL THEN NULL ELSE wechat_sync_jobs.finished_at END
WHERE wechat_sync_jobs.lease_until IS NULL OR wechat_sync_jobs.lease_until < now()
RETURNING run_id, cursor, report
"""

_RELEASE = """
UPDATE wechat_sync_jobs SET lease_owner = NULL, lease_until = NULL, report = $4, updated_at = now(),
    finished_at = CASE WHEN $5 THEN now() ELSE finished_at END
WHERE appid = $1 AND job = $2 AND lease_owner = $3
"""

_MAPPINGS = "SELECT tag_id, wechat_tag_id FROM wechat_tags WHERE appid = $1"

# A WeChat tag deleted on WeChat's side (e.g. in the admin console): forget it and what we applied.
_FORGET_WECHAT_TAGS = """
WITH gone AS (
    DELETE FROM wechat_tags WHERE appid = $1 AND wechat_tag_id = ANY($2::int[]) RETURNING wechat_tag_id
)
DELETE FROM wechat_user_tags WHERE appid = $1 AND wechat_tag_id IN (SELECT wechat_tag_id FROM gone)
"""

_MAP_TAG = """
INSERT INTO wechat_tags (appid, tag_id, wechat_tag_id, name) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING
"""

_SYNCED_TAGS = "SELECT id, name FROM tags WHERE wechat_sync ORDER BY priority, name"
_TAGS_NAMED = "SELECT id, name FROM tags WHERE name = ANY($1::text[])"

# One chunk of followers (openid order, after the cursor), diffed in SQL: what WeChat should hold
# (at most $5 synced tags per follower, lowest priority first) against what we applied, for every
# openid in the chunk's range (cursor, upto]; (un)tagging decided as attempts of at most $6 openids;
# applied tags of openids that no longer follow forgotten (WeChat cannot untag them: 40003); the
# cursor moved and the lease renewed. One statement, one transaction: a crash leaves either nothing
# or the whole decision with its cursor.
_DECIDE_CHUNK = """
WITH page AS (
    SELECT f.openid, f.member_id FROM follows f
    WHERE f.appid = $1 AND f.subscribed AND f.openid > coalesce($3::text, '')
    ORDER BY f.openid
    LIMIT $4
), bounds AS (
    SELECT CASE WHEN count(*) < $4 THEN NULL ELSE max(openid) END AS upto FROM page
), desired AS (
    SELECT openid, wechat_tag_id FROM (
        SELECT p.openid, wt.wechat_tag_id, row_number() OVER (PARTITION BY p.openid ORDER BY t.priority, t.name) AS n
        FROM page p
        JOIN member_tags mt ON mt.member_id = p.member_id
        JOIN tags t ON t.id = mt.tag_id AND t.wechat_sync
        JOIN wechat_tags wt ON wt.appid = $1 AND wt.tag_id = t.id
    ) ranked WHERE n <= $5
), applied AS (
    SELECT u.openid, u.wechat_tag_id FROM wechat_user_tags u CROSS JOIN bounds b
    WHERE u.appid = $1 AND u.openid > coalesce($3::text, '') AND (b.upto IS NULL OR u.openid <= b.upto)
), gone AS (
    DELETE FROM wechat_user_tags u USING applied a
    WHERE u.appid = $1 AND u.openid = a.openid AND u.wechat_tag_id = a.wechat_tag_id
      AND NOT EXISTS (SELECT 1 FROM page p WHERE p.openid = a.openid)
    RETURNING 1
), diff AS (
    SELECT 'tag' AS op, d.openid, d.wechat_tag_id FROM desired d
    WHERE NOT EXISTS (SELECT 1 FROM applied a WHERE a.openid = d.openid AND a.wechat_tag_id = d.wechat_tag_id)
    UNION ALL
    SELECT 'untag', a.openid, a.wechat_tag_id FROM applied a
    WHERE EXISTS (SELECT 1 FROM page p WHERE p.openid = a.openid)
      AND NOT EXISTS (SELECT 1 FROM desired d WHERE d.openid = a.openid AND d.wechat_tag_id = a.wechat_tag_id)
), attempts AS (
    INSERT INTO wechat_sync_attempts (appid, run_id, op, wechat_tag_id, openids)
    SELECT $1, $2, op, wechat_tag_id, array_agg(openid ORDER BY openid)
    FROM (
        SELECT op, openid, wechat_tag_id,
               (row_number() OVER (PARTITION BY op, wechat_tag_id ORDER BY openid) - 1) / $6 AS batch
        FROM diff
    ) numbered
    GROUP BY op, wechat_tag_id, batch
    RETURNING id
), moved AS (
    UPDATE wechat_sync_jobs SET cursor = (SELECT upto FROM bounds), lease_until = now() + make_interval(secs => $8),
        updated_at = now()
    WHERE appid = $1 AND job = 'tag_sync' AND lease_owner = $7
    RETURNING 1
)
SELECT (SELECT count(*) FROM page) AS followers, (SELECT upto FROM bounds) AS upto,
       (SELECT count(*) FROM gone) AS forgotten, (SELECT count(*) FROM attempts) AS attempts,
       (SELECT count(*) FROM moved) AS held
"""

# Untagging first: it frees room under WeChat's 20 tags per user for the tagging after it.
_PENDING = """
SELECT id, op, wechat_tag_id, openids FROM wechat_sync_attempts
WHERE appid = $1 AND state = 'pending' ORDER BY op = 'tag', id
"""

# The outcome of one attempt, recorded in one statement: what WeChat now holds, and the attempt done.
_FINISH = """
WITH done AS (
    UPDATE wechat_sync_attempts SET state = 'done', done_at = now(), outcome = $3
    WHERE id = $1 AND state = 'pending'
    RETURNING appid, op, wechat_tag_id
), tagged AS (
    INSERT INTO wechat_user_tags (appid, openid, wechat_tag_id)
    SELECT d.appid, o, d.wechat_tag_id FROM done d CROSS JOIN unnest($2::text[]) AS o
    WHERE d.op = 'tag'
    ON CONFLICT DO NOTHING
), untagged AS (
    DELETE FROM wechat_user_tags u USING done d
    WHERE d.op = 'untag' AND u.appid = d.appid AND u.wechat_tag_id = d.wechat_tag_id AND u.openid = ANY($2::text[])
)
SELECT count(*) FROM done
"""

_MENUS = "SELECT id, menuid FROM wechat_menus WHERE appid = $1 ORDER BY id"
_DROP_MENU = "DELETE FROM wechat_menus WHERE id = $1"
_ADD_MENU = """
INSERT INTO wechat_menus (appid, tag_name, wechat_tag_id, menuid, body) VALUES ($1, $2, $3, $4, $5)
"""


class WeChatSyncRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def claim(
        self, appid: str, job: str, owner: uuid.UUID, lease_seconds: float
    ) -> tuple[uuid.UUID, str | None, dict[str, Any]] | None:
        """(run id, cursor, report so far) when the lease is ours; None while another holds it."""
        row = await self.conn.fetchrow(_CLAIM, appid, job, owner, lease_seconds, uuid.uuid4())
        return None if row is None else (row["run_id"], row["cursor"], dict(row["report"] or {}))

    async def release(self, appid: str, job: str, owner: uuid.UUID, *, report: dict[str, Any], finished: bool) -> None:
        await self.conn.execute(_RELEASE, appid, job, owner, report, finished)

    async def mappings(self, appid: str) -> dict[int, int]:
        """Siyu tag id → WeChat tag id on ``appid``."""
        return {r["tag_id"]: r["wechat_tag_id"] for r in await self.conn.fetch(_MAPPINGS, appid)}

    async def forget_wechat_tags(self, appid: str, wechat_tag_ids: Sequence[int]) -> None:
        if wechat_tag_ids:
            await self.conn.execute(_FORGET_WECHAT_TAGS, appid, list(wechat_tag_ids))

    async def map_tag(self, appid: str, tag_id: int, wechat_tag_id: int, name: str) -> None:
        await self.conn.execute(_MAP_TAG, appid, tag_id, wechat_tag_id, name)

    async def synced_tags(self) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_SYNCED_TAGS))

    async def tags_named(self, names: Sequence[str]) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_TAGS_NAMED, sorted(set(names))))

    async def decide_chunk(
        self,
        appid: str,
        *,
        run_id: uuid.UUID,
        owner: uuid.UUID,
        cursor: str | None,
        limit: int,
        max_tags_per_user: int,
        batch: int,
        lease_seconds: float,
    ) -> asyncpg.Record:
        row: asyncpg.Record = await self.conn.fetchrow(
            _DECIDE_CHUNK, appid, run_id, cursor, limit, max_tags_per_user, batch, owner, lease_seconds
        )
        return row

    async def pending(self, appid: str) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_PENDING, appid))

    async def finish(self, attempt_id: int, applied: Sequence[str], outcome: dict[str, Any]) -> bool:
        return bool(await self.conn.fetchval(_FINISH, attempt_id, list(applied), outcome))

    async def menus(self, appid: str) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_MENUS, appid))

    async def drop_menu(self, row_id: int) -> None:
        await self.conn.execute(_DROP_MENU, row_id)

    async def add_menu(
        self, appid: str, *, tag_name: str | None, wechat_tag_id: int | None, menuid: str | None, body: dict[str, Any]
    ) -> None:
        await self.conn.execute(_ADD_MENU, appid, tag_name, wechat_tag_id, menuid, body)
