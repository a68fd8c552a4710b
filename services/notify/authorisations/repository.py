"""The subscription ledger: one-time authorisations left and long-term consent, per (app, openid, template)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared.db import Database, delete_in_batches

_LOCK = "SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2 || '/' || $3))"
# The same acceptance is reported twice, by the mini-program (POST /api/v1/subscriptions) and by
# WeChat's push: a grant from one source within two minutes of an unmatched one from the other is
# the same acceptance.
_GRANT = """
WITH twin AS (
    UPDATE authorisation_grants SET matched = true
    WHERE id = (SELECT id FROM authorisation_grants
                WHERE appid = $1 AND openid = $2 AND template_id = $3 AND source <> $4 AND NOT matched
                  AND granted_at BETWEEN $5::timestamptz - interval '2 minutes'
                                     AND $5::timestamptz + interval '2 minutes'
                ORDER BY granted_at LIMIT 1)
    RETURNING id
)
INSERT INTO authorisation_grants (appid, openid, template_id, source, granted_at, matched)
SELECT $1, $2, $3, $4, $5::timestamptz, EXISTS (SELECT 1 FROM twin)
RETURNING NOT matched
"""
_ADD_ONE = """
INSERT INTO authorisations AS a (appid, openid, template_id, remaining) VALUES ($1, $2, $3, 1)
ON CONFLICT (appid, openid, template_id) DO UPDATE SET remaining = a.remaining + 1, updated_at = now()
"""
_LONG_TERM = """
INSERT INTO authorisations AS a (appid, openid, template_id, long_term) VALUES ($1, $2, $3, $4)
ON CONFLICT (appid, openid, template_id) DO UPDATE SET long_term = EXCLUDED.long_term, updated_at = now()
"""
_TURN_OFF = """
INSERT INTO authorisations AS a (appid, openid, template_id) VALUES ($1, $2, $3)
ON CONFLICT (appid, openid, template_id) DO UPDATE SET remaining = 0, long_term = false, updated_at = now()
"""
_CONSUME = """
UPDATE authorisations SET remaining = remaining - CASE WHEN long_term THEN 0 ELSE 1 END, updated_at = now()
WHERE appid = $1 AND openid = $2 AND template_id = $3 AND (long_term OR remaining > 0)
RETURNING true
"""
_GIVE_BACK = """
UPDATE authorisations SET remaining = remaining + 1, updated_at = now()
WHERE appid = $1 AND openid = $2 AND template_id = $3 AND NOT long_term
"""
_OF = (
    "SELECT template_id, remaining, long_term FROM authorisations WHERE appid = $1 AND openid = $2 ORDER BY template_id"
)


class AuthorisationRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock(self, appid: str, openid: str, template_id: str) -> None:
        await self.conn.execute(_LOCK, appid, openid, template_id)

    async def record_grant(self, appid: str, openid: str, template_id: str, source: str, at: datetime) -> bool:
        """Log a one-time acceptance; True when it is new (not the other source's report of the same one)."""
        return bool(await self.conn.fetchval(_GRANT, appid, openid, template_id, source, at))

    async def add_one(self, appid: str, openid: str, template_id: str) -> None:
        await self.conn.execute(_ADD_ONE, appid, openid, template_id)

    async def set_long_term(self, appid: str, openid: str, template_id: str, accepted: bool) -> None:
        await self.conn.execute(_LONG_TERM, appid, openid, template_id, accepted)

    async def turn_off(self, appid: str, openid: str, template_id: str) -> None:
        await self.conn.execute(_TURN_OFF, appid, openid, template_id)

    async def consume(self, appid: str, openid: str, template_id: str) -> bool:
        return bool(await self.conn.fetchval(_CONSUME, appid, openid, template_id))

    async def give_back(self, appid: str, openid: str, template_id: str) -> None:
        await self.conn.execute(_GIVE_BACK, appid, openid, template_id)

    async def of(self, appid: str, openid: str) -> list[dict[str, object]]:
        return [dict(r) for r in await self.conn.fetch(_OF, appid, openid)]


# Retention (services/notify/retention.py). A grant only pairs with its twin within two minutes; after
# that it is the consent record. A spent one-time authorisation (none left, no long-term consent)
# reads exactly like no row at all; the horizon outlasts any send that could still give one back.
GRANTS_EXPIRED = "granted_at < $1"
AUTHORISATIONS_SPENT = "remaining = 0 AND NOT long_term AND updated_at < $1"


async def prune_grants(db: Database, before: datetime) -> int:
    """Acceptances reported before ``before`` (walks ix_authorisation_grants_granted_at)."""
    return await delete_in_batches(db, "authorisation_grants", GRANTS_EXPIRED, before)


async def prune_spent_authorisations(db: Database, before: datetime) -> int:
    """Ledger rows with nothing left, unchanged since ``before`` (walks ix_authorisations_spent)."""
    return await delete_in_batches(db, "authorisations", AUTHORISATIONS_SPENT, before)
