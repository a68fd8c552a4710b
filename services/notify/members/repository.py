"""notify's projection of member channels: app identities, follow state, customer-service windows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.db import Database, delete_in_batches

_UPSERT_IDENTITY = """
INSERT INTO member_apps (appid, openid, member_id, app_kind) VALUES ($1, $2, $3, $4)
ON CONFLICT (appid, openid) DO UPDATE SET
    member_id = EXCLUDED.member_id, app_kind = EXCLUDED.app_kind, updated_at = now()
"""
_SET_FOLLOWING = """
INSERT INTO member_apps (appid, openid, member_id, app_kind, following) VALUES ($1, $2, $3, 'official_account', $4)
ON CONFLICT (appid, openid) DO UPDATE SET
    member_id = EXCLUDED.member_id, following = EXCLUDED.following, updated_at = now()
"""
_NOT_FOLLOWING = "UPDATE member_apps SET following = false, updated_at = now() WHERE appid = $1 AND openid = $2"
_MERGE = "UPDATE member_apps SET member_id = $1, updated_at = now() WHERE member_id = $2"
_CHANNELS = """
SELECT m.appid, m.app_kind, m.openid, m.following,
       COALESCE(w.expires_at > now() AND w.remaining > 0, false) AS window_open,
       COALESCE((SELECT sum(a.remaining) FROM authorisations a
                 WHERE a.appid = m.appid AND a.openid = m.openid
                   AND a.template_id = ANY($2::text[])), 0)::int AS remaining,
       COALESCE((SELECT bool_or(a.long_term) FROM authorisations a
                 WHERE a.appid = m.appid AND a.openid = m.openid
                   AND a.template_id = ANY($2::text[])), false) AS long_term
FROM member_apps m
LEFT JOIN service_windows w ON w.appid = m.appid AND w.openid = m.openid
WHERE m.member_id = $1
"""
_OPENID = "SELECT openid FROM member_apps WHERE member_id = $1 AND appid = $2 ORDER BY updated_at DESC LIMIT 1"
_MEMBER_OF = "SELECT member_id FROM member_apps WHERE appid = $1 AND openid = $2"

# A window is the user's latest interaction's: a longer one is never shortened by a shorter one.
_OPEN_WINDOW = """
INSERT INTO service_windows AS w (appid, openid, expires_at, remaining)
VALUES ($1, $2, to_timestamp($3) + make_interval(secs => $4), $5)
ON CONFLICT (appid, openid) DO UPDATE SET
    remaining = CASE WHEN EXCLUDED.expires_at >= w.expires_at OR w.expires_at <= now()
                     THEN GREATEST(EXCLUDED.remaining, CASE WHEN w.expires_at > now() THEN w.remaining ELSE 0 END)
                     ELSE w.remaining END,
    expires_at = GREATEST(w.expires_at, EXCLUDED.expires_at)
"""
_CLOSE_WINDOW = "DELETE FROM service_windows WHERE appid = $1 AND openid = $2"
_USE_WINDOW = """
UPDATE service_windows SET remaining = remaining - 1
WHERE appid = $1 AND openid = $2 AND remaining > 0 AND expires_at > now() RETURNING true
"""
_GIVE_BACK_WINDOW = (
    "UPDATE service_windows SET remaining = remaining + 1 WHERE appid = $1 AND openid = $2 AND expires_at > now()"
)


@dataclass(frozen=True)
class AppChannel:
    appid: str
    app_kind: str
    openid: str
    following: bool
    window_open: bool
    remaining: int  # one-time authorisations held for the rule's templates on this app
    long_term: bool


class MemberRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def upsert_identity(self, appid: str, openid: str, member_id: str, app_kind: str) -> None:
        await self.conn.execute(_UPSERT_IDENTITY, appid, openid, member_id, app_kind)

    async def set_following(self, appid: str, openid: str, member_id: str, following: bool) -> None:
        await self.conn.execute(_SET_FOLLOWING, appid, openid, member_id, following)

    async def not_following(self, appid: str, openid: str) -> None:
        await self.conn.execute(_NOT_FOLLOWING, appid, openid)

    async def merge(self, survivor_id: str, merged_id: str) -> None:
        await self.conn.execute(_MERGE, survivor_id, merged_id)

    async def channels(self, member_id: str, template_ids: list[str]) -> list[AppChannel]:
        return [AppChannel(**dict(r)) for r in await self.conn.fetch(_CHANNELS, member_id, template_ids)]

    async def openid(self, member_id: str, appid: str) -> str | None:
        value: str | None = await self.conn.fetchval(_OPENID, member_id, appid)
        return value

    async def member_of(self, appid: str, openid: str) -> str | None:
        value: str | None = await self.conn.fetchval(_MEMBER_OF, appid, openid)
        return value


class WindowRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def open(self, appid: str, openid: str, at: int, seconds: float, count: int) -> None:
        await self.conn.execute(_OPEN_WINDOW, appid, openid, at, seconds, count)

    async def close(self, appid: str, openid: str) -> None:
        await self.conn.execute(_CLOSE_WINDOW, appid, openid)

    async def use(self, appid: str, openid: str) -> bool:
        return bool(await self.conn.fetchval(_USE_WINDOW, appid, openid))

    async def give_back(self, appid: str, openid: str) -> None:
        await self.conn.execute(_GIVE_BACK_WINDOW, appid, openid)


# Retention (services/notify/retention.py): a window that expired is worth nothing (every read and
# spend checks expires_at, and the member's next message opens a fresh one).
WINDOWS_EXPIRED = "expires_at < $1"


async def prune_windows(db: Database, before: datetime) -> int:
    """Customer-service windows that expired before ``before`` (walks ix_service_windows_expires_at)."""
    return await delete_in_batches(db, "service_windows", WINDOWS_EXPIRED, before)
