"""The gateway's rate-limit check (one GCRA UPSERT in PostgreSQL) against a bare round trip.

Cases (all through :class:`services.gateway.ratelimit.RateLimiter` and the same engine):

``SELECT 1, autocommit``            the floor: one round trip, as the check is sent.
``SELECT 1, own transaction``       BEGIN / query / COMMIT through a session, for comparison.
``check, 1 hot key, sequential``    one member hammering: the same row updated each time.
``check, distinct keys, sequential``  many members/addresses: a new or different row each time.
``check, 1 hot key, 50 concurrent`` the worst case for row-lock contention (one key, 50 callers).
``check, distinct keys, 50 concurrent``  the normal shape of load.

The limit is set high enough that every check is allowed (the update path is the costly one).
Everything runs in its own database (``siyu_bench_ratelimit``, migrated, dropped at the end).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from sqlalchemy import text

from bench import register
from bench.harness import Run
from services.gateway.ratelimit import Limit, RateLimiter
from shared.db import create_engine, create_sessionmaker, migrate
from shared.observability import configure_logging
from shared.settings import SiyuSettings, load_settings

DB = "siyu_bench_ratelimit"
CONCURRENCY = 50


async def _drop(dsn: str) -> None:
    conn = await asyncpg.connect(f"{dsn}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    finally:
        await conn.close()


@register(
    "gateway_ratelimit",
    n=5_000,
    quick_n=1_000,
    description="the gateway's PostgreSQL GCRA rate-limit check vs a bare SELECT 1 transaction",
)
async def bench(run: Run) -> None:
    configure_logging("bench", "WARNING")
    dsn = load_settings(SiyuSettings).postgres_dsn.rstrip("/")
    url = f"{dsn}/{DB}".replace("postgresql://", "postgresql+asyncpg://")
    await _drop(dsn)
    await migrate("gateway", url)
    engine = create_engine(url, pool_size=CONCURRENCY)
    sessions = create_sessionmaker(engine)
    limiter = RateLimiter(engine)
    roomy = Limit("bench", 10**9)
    n = run.n
    try:
        async with sessions() as s:
            run.facts["postgres"] = (await s.execute(text("SHOW server_version"))).scalar()
            run.facts["synchronous_commit"] = (await s.execute(text("SHOW synchronous_commit"))).scalar()

        for i in range(200):  # warm the pool, the statement caches and the table
            await limiter.check(roomy, f"warm-{i % 20}")

        floor = "SELECT 1, autocommit"
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        c = run.new_case(floor, group="sequential", unit="checks/s", baseline=True, latency_of="query")
        with c.timed():
            for _ in range(n):
                t0 = time.perf_counter()
                async with autocommit.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                c.latencies.add(time.perf_counter() - t0)
        c.n = n
        run.record(c)

        tx = "SELECT 1, own transaction"
        c = run.new_case(tx, group="sequential", unit="checks/s", baseline=True, latency_of="transaction")
        with c.timed():
            for _ in range(n):
                t0 = time.perf_counter()
                async with sessions() as session, session.begin():
                    await session.execute(text("SELECT 1"))
                c.latencies.add(time.perf_counter() - t0)
        c.n = n
        run.record(c)

        for name, keys in (("check, 1 hot key, sequential", ["hot"]), ("check, distinct keys, sequential", None)):
            c = run.new_case(name, group="sequential", unit="checks/s", compare_to=[floor, tx], latency_of="check")
            with c.timed():
                for i in range(n):
                    key = keys[0] if keys else f"k{i}"
                    t0 = time.perf_counter()
                    decision = await limiter.check(roomy, key)
                    c.latencies.add(time.perf_counter() - t0)
                    assert decision.allowed
            c.n = n
            run.record(c)

        for name, hot in (("check, 1 hot key, 50 concurrent", True), ("check, distinct keys, 50 concurrent", False)):
            c = run.new_case(name, group="concurrent", unit="checks/s", latency_of="check")
            prefix = uuid.uuid4().hex[:8]

            async def worker(w: int, case: object = c, hot: bool = hot, prefix: str = prefix) -> None:
                for i in range(n // CONCURRENCY):
                    key = f"{prefix}-hot" if hot else f"{prefix}-{w}-{i}"
                    t0 = time.perf_counter()
                    await limiter.check(roomy, key)
                    case.latencies.add(time.perf_counter() - t0)  # type: ignore[attr-defined]

            with c.timed():
                await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
            c.n = (n // CONCURRENCY) * CONCURRENCY
            run.record(c)
    finally:
        await engine.dispose()
        await _drop(dsn)
