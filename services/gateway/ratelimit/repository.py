"""SQL of the rate limits: every bucket of a request checked and counted by ONE statement."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.db import Database, delete_in_batches

# GCRA per row (services/gateway/ratelimit/service.py). EXCLUDED carries each bucket's emission
# interval T (as tat = now() + T) and its period P, so buckets of different limits share the
# statement; both CASE branches see the row's old tat, RETURNING the new one. Rows are inserted,
# and so locked, in key order: two requests sharing buckets can never deadlock. ``sweep_at`` moves
# only when it is within SWEEP_REFRESH of now, so nearly every check leaves every indexed column
# alone and stays a HOT update.
CHECK_BUCKETS = """
INSERT INTO rate_limits AS r (key, tat, allowed, period_s, sweep_at)
SELECT b.key, now() + make_interval(secs => b.t), true, b.p, now() + interval '1 hour'
FROM unnest($1::text[], $2::float8[], $3::float8[]) AS b(key, t, p)
ORDER BY b.key
ON CONFLICT (key) DO UPDATE SET
    allowed = GREATEST(r.tat, now()) + (EXCLUDED.tat - now()) <= now() + make_interval(secs => EXCLUDED.period_s),
    tat = CASE
        WHEN GREATEST(r.tat, now()) + (EXCLUDED.tat - now()) <= now() + make_interval(secs => EXCLUDED.period_s)
        THEN GREATEST(r.tat, now()) + (EXCLUDED.tat - now())
        ELSE r.tat
    END,
    period_s = EXCLUDED.period_s,
    sweep_at = CASE WHEN r.sweep_at < now() + interval '50 minutes' THEN EXCLUDED.sweep_at ELSE r.sweep_at END
RETURNING key, allowed, EXTRACT(EPOCH FROM (tat - now()))::float8 AS ahead
"""


class RateLimitRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def check(
        self, keys: Sequence[str], intervals: Sequence[float], periods: Sequence[float]
    ) -> dict[str, tuple[bool, float]]:
        """Count a request in each bucket: per key, (allowed, seconds its tat is ahead of now)."""
        rows = await self.conn.fetch(CHECK_BUCKETS, keys, intervals, periods)
        return {row["key"]: (row["allowed"], row["ahead"]) for row in rows}


async def prune_idle_buckets(db: Database) -> int:
    """Buckets idle long enough to be forgotten (walks ix_rate_limits_sweep_at)."""
    return await delete_in_batches(db, "rate_limits", "sweep_at < now()")
