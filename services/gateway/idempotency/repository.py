"""SQL of the idempotency keys: claim, complete, release (one statement each), and retention."""

from __future__ import annotations

import uuid

import asyncpg

from services.gateway.idempotency.schemas import Claim, KeyHeld, StoredAnswer
from shared.db import Database, delete_in_batches

# Claim the key, or read what holds it, in one statement. An expired key is free again; a claim
# abandoned by a request that died with its replica is taken over once its lock has passed (same
# request only). A claim a concurrent request is committing right now is not visible to the
# read half; the caller tries again.
_CLAIM = """
WITH claimed AS (
    INSERT INTO idempotency_keys AS k (scope, key, request_hash, status, owner, locked_until, expires_at)
    VALUES ($1, $2, $3, 'in_flight', $4, now() + make_interval(secs => $5), now() + make_interval(secs => $6))
    ON CONFLICT (scope, key) DO UPDATE SET
        request_hash = EXCLUDED.request_hash,
        status = 'in_flight',
        owner = EXCLUDED.owner,
        response_status = NULL,
        response_headers = NULL,
        response_body = NULL,
        created_at = now(),
        locked_until = EXCLUDED.locked_until,
        expires_at = EXCLUDED.expires_at
    WHERE k.expires_at <= now()
       OR (k.status = 'in_flight' AND k.locked_until <= now() AND k.request_hash = EXCLUDED.request_hash)
    RETURNING k.id
)
SELECT id, true AS claimed, NULL::text AS request_hash, NULL::text AS status,
       NULL::int AS response_status, NULL::jsonb AS response_headers, NULL::bytea AS response_body
FROM claimed
UNION ALL
SELECT id, false, request_hash, status, response_status, response_headers, response_body
FROM idempotency_keys
WHERE scope = $1 AND key = $2 AND NOT EXISTS (SELECT 1 FROM claimed)
"""

_COMPLETE = """
UPDATE idempotency_keys SET
    status = 'done', response_status = $3, response_headers = $4, response_body = $5, locked_until = now(),
    expires_at = COALESCE(now() + make_interval(secs => $6), expires_at)
WHERE id = $1 AND owner = $2
"""

_RELEASE = "DELETE FROM idempotency_keys WHERE id = $1 AND owner = $2"


class IdempotencyRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def claim(
        self, scope: str, key: str, request_hash: str, *, lock_seconds: float, ttl_seconds: float
    ) -> Claim | StoredAnswer | KeyHeld | None:
        """This request's claim, the stored answer to replay, who holds it, or None (try again)."""
        owner = uuid.uuid4()
        row = await self.conn.fetchrow(_CLAIM, scope, key, request_hash, owner, lock_seconds, ttl_seconds)
        if row is None:
            return None
        if row["claimed"]:
            return Claim(row["id"], owner)
        if row["request_hash"] != request_hash:
            return KeyHeld(reused=True)
        if row["status"] != "done" or row["response_status"] is None or row["response_body"] is None:
            return KeyHeld(reused=False)
        return StoredAnswer(row["response_status"], dict(row["response_headers"] or {}), bytes(row["response_body"]))

    async def complete(
        self, claim: Claim, status: int, headers: dict[str, str], body: bytes, replay_seconds: float | None
    ) -> None:
        await self.conn.execute(_COMPLETE, claim.id, claim.owner, status, headers, body, replay_seconds)

    async def release(self, claim: Claim) -> None:
        await self.conn.execute(_RELEASE, claim.id, claim.owner)


async def prune_expired_keys(db: Database) -> int:
    """Keys past their replay horizon (walks ix_idempotency_keys_expires_at)."""
    return await delete_in_batches(db, "idempotency_keys", "expires_at < now()")
