"""Rate limits shared by every gateway replica: one GCRA bucket per key in PostgreSQL.

GCRA (the generic cell rate algorithm, as in redis-cell) keeps one timestamp per key, the
*theoretical arrival time* ``tat``. With ``limit`` requests per ``period``, each request advances
``tat`` by one emission interval ``T = period / limit``; it is allowed when the advanced ``tat`` is
at most one ``period`` ahead of now. That allows a burst of ``limit`` and then a steady
``limit / period``, with no window boundary at which a client may send twice its limit (a fixed
window's flaw), in one row per key.

A request is counted in every bucket that applies to it (its client address, its member, its
route) by ONE statement in autocommit: one round trip, atomic across replicas, row locks held only
while the statement runs, and counted even when the request later fails. Each bucket counts the
request when it has room, whatever the others say: a request refused by its member's limit still
spends its address's budget, as a flood of refused requests must. The clock is the database's, so
replicas with skewed clocks agree. The table is UNLOGGED (no WAL per check).
``bench/gateway_ratelimit.py`` measures the cost.

When the database cannot be reached the limiter fails open (logs, counts, lets the request
through): the request then fails or succeeds on its own dependencies, and a database blip does
not turn into a wall of 429s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter

from services.gateway.ratelimit.repository import RateLimitRepository, prune_idle_buckets
from services.gateway.ratelimit.schemas import ApiLimits, Bucket, Decision, Limit
from shared.db import Database
from shared.errors import TooManyRequests
from shared.observability import get_logger
from shared.periodic import run_every

if TYPE_CHECKING:
    from services.gateway.deps import GatewayDeps

log = get_logger(__name__)

LIMITED = Counter("siyu_gateway_rate_limited_total", "Requests refused by a rate limit", ["bucket"])
LIMITER_ERRORS = Counter("siyu_gateway_rate_limiter_errors_total", "Rate-limit checks that failed open")


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
    def __init__(self, db: Database, limits: ApiLimits) -> None:
        self.db = db
        self.limits = limits

    async def check(self, buckets: Sequence[Bucket]) -> list[Decision]:
        """Count the request in every bucket (one statement); each bucket's decision, in order."""
        try:
            async with self.db.connection() as conn:
                verdicts = await RateLimitRepository(conn).check(
                    [b.row_key for b in buckets], [b.limit.interval for b in buckets], [b.limit.period for b in buckets]
                )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            LIMITER_ERRORS.inc()
            log.error("ratelimit.unavailable", buckets=[b.limit.name for b in buckets], error=repr(exc))
            return [Decision(b, True, 0) for b in buckets]
        decisions = []
        for b in buckets:
            allowed, ahead = verdicts[b.row_key]
            # Allowed again once tat - now <= period - T.
            wait = 0 if allowed else max(1, math.ceil(ahead - (b.limit.period - b.limit.interval)))
            decisions.append(Decision(b, allowed, wait))
        return decisions

    async def enforce(self, buckets: Sequence[Bucket]) -> None:
        """Count the request; 429 naming the bucket that holds it back longest when any refuses."""
        refused = [d for d in await self.check(buckets) if not d.allowed]
        if not refused:
            return
        worst = max(refused, key=lambda d: d.retry_after)
        for d in refused:
            LIMITED.labels(d.bucket.limit.name).inc()
        raise RateLimited(worst.bucket.limit, worst.retry_after, worst.bucket.who)


async def prune_rate_limits(db: Database) -> int:
    """Forget buckets idle for far longer than any period: their next check starts them afresh.

    Horizon: a bucket's ``sweep_at`` is at least 50 minutes after its last check; a period is 60 s,
    so a swept bucket would have been full again anyway.
    """
    return await prune_idle_buckets(db)


JANITOR_INTERVAL_SECONDS = 600


async def rate_limit_janitor(deps: GatewayDeps) -> None:
    async def once() -> dict[str, int]:
        return {"rate_limit_buckets": await prune_rate_limits(deps.db)}

    await run_every(JANITOR_INTERVAL_SECONDS, once, "janitor.rate_limits_pruned")
