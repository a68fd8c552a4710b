"""Rate limits shared by every gateway replica: one GCRA bucket per key in PostgreSQL.

GCRA (the generic cell rate algorithm, as in redis-cell) keeps one timestamp per key, the
*theoretical arrival time* ``tat``. With ``limit`` requests per ``period``, each request advances
``tat`` by one emission interval ``T = period / limit``; it is allowed when the advanced ``tat`` is
at most one ``period`` ahead of now. That allows a burst of ``limit`` and then a steady
``limit / period``, with no window boundary at which a client may send twice its limit (a fixed
window's flaw), in one row per key.

A check is ONE statement (``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``) sent in autocommit
mode: one round trip, atomic across replicas, the row lock held only while the statement runs
(never across a round trip, let alone the length of a request), and counted even when the
request later fails. The clock is the
database's, so replicas with skewed clocks agree. The table is UNLOGGED (no WAL per check).
``bench/gateway_ratelimit.py`` measures the cost.

When the database cannot be reached the limiter fails open (logs, counts, lets the request
through): the request then fails or succeeds on its own dependencies, and a database blip does
not turn into a wall of 429s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.errors import TooManyRequests
from shared.observability import get_logger

log = get_logger(__name__)

LIMITED = Counter("siyu_gateway_rate_limited_total", "Requests refused by a rate limit", ["bucket"])
LIMITER_ERRORS = Counter("siyu_gateway_rate_limiter_errors_total", "Rate-limit checks that failed open")

# Both branches of the CASE see the row's old ``tat``; RETURNING sees the new one.
_CHECK = text(
    """
    INSERT INTO rate_limits AS r (key, tat, allowed)
    VALUES (:key, now() + make_interval(secs => :t), true)
    ON CONFLICT (key) DO UPDATE SET
        allowed = GREATEST(r.tat, now()) + make_interval(secs => :t) <= now() + make_interval(secs => :p),
        tat = CASE
            WHEN GREATEST(r.tat, now()) + make_interval(secs => :t) <= now() + make_interval(secs => :p)
            THEN GREATEST(r.tat, now()) + make_interval(secs => :t)
            ELSE r.tat
        END
    RETURNING allowed, EXTRACT(EPOCH FROM (tat - now()))::float8 AS ahead
    """
)

_PRUNE = text("DELETE FROM rate_limits WHERE tat < now() - make_interval(secs => :idle)")


@dataclass(frozen=True)
class Limit:
    """``limit`` requests per ``period`` seconds for one bucket (``name``) of keys."""

    name: str
    limit: int
    period: float = 60.0

    @property
    def interval(self) -> float:
        return self.period / self.limit


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # seconds; 0 when allowed


class RateLimited(TooManyRequests):
    def __init__(self, limit: Limit, retry_after: int, who: str) -> None:
        super().__init__(
            f"too many requests from this {who}: at most {limit.limit} per {limit.period:g} s; "
            f"retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            limit=limit.name,
            retry_after=retry_after,
        )


class RateLimiter:
    def __init__(self, engine: AsyncEngine) -> None:
        # Same pool, no transaction around each statement.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def check(self, limit: Limit, key: str) -> Decision:
        params = {"key": f"{limit.name}:{key}"[:200], "t": limit.interval, "p": limit.period}
        try:
            async with self.engine.connect() as conn:
                row = (await conn.execute(_CHECK, params)).one()
        except (DBAPIError, PoolTimeout, OSError) as exc:
            LIMITER_ERRORS.inc()
            log.error("ratelimit.unavailable", bucket=limit.name, error=repr(exc))
            return Decision(True, 0)
        if row.allowed:
            return Decision(True, 0)
        # Allowed again once tat - now <= period - T.
        wait = row.ahead - (limit.period - limit.interval)
        return Decision(False, max(1, math.ceil(wait)))

    async def enforce(self, limit: Limit, key: str, *, who: str) -> None:
        decision = await self.check(limit, key)
        if not decision.allowed:
            LIMITED.labels(limit.name).inc()
            raise RateLimited(limit, decision.retry_after, who)

    async def prune(self, idle_seconds: float = 3600) -> int:
        """Forget buckets idle for longer than any period: their next check starts them afresh."""
        async with self.engine.connect() as conn:
            result = await conn.execute(_PRUNE, {"idle": idle_seconds})
        return int(result.rowcount or 0)
