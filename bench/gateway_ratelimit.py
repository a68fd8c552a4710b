"""The gateway's rate-limit check — every bucket of a request in ONE GCRA UPSERT — against bare asyncpg.

A mini-program request is counted in up to three buckets (its client address, its member, its
route). Cases, on the gateway's schema in its own database (``siyu_bench_ratelimit``, migrated,
dropped at the end):

``SELECT 1 (floor)``                    one round trip on a pooled connection, as the check is sent.
``bare asyncpg, the same statement``    the check's SQL on a plain asyncpg pool: the database work
                                        alone (the baseline of the limiter's own cost).
``RateLimiter.check, 3 buckets``        ``services.gateway.ratelimit`` as a request uses it.
``3 buckets as 3 statements``           the same buckets one statement each (how it was): what
                                        one statement saves.

Each group runs sequentially (latency) and with 50 concurrent callers (throughput), on distinct
members (the normal shape) and on one hot member (the worst case for row locks). Limits are set so
every check is allowed (the update path is the costly one).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from bench import register
from bench.harness import Case, Run
from services.gateway.ratelimit.repository import CHECK_BUCKETS
from services.gateway.ratelimit.schemas import ApiLimits, Bucket, Limit
from services.gateway.ratelimit.service import RateLimiter
from services.gateway.settings import GatewaySettings
from shared.db import Database, migrate
from shared.observability import configure_logging
from shared.settings import SiyuSettings, load_settings

DB = "siyu_bench_ratelimit"
CONCURRENCY = 50
POOL = 10  # a service's pool (db_pool_size): 50 callers share it, as requests do
ROOMY = 10**9


async def _no_reset(conn: asyncpg.Connection) -> None:
    pass


async def _drop(dsn: str) -> None:
    conn = await asyncpg.connect(f"{dsn}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    finally:
        await conn.close()


def buckets(member: str, address: str) -> list[Bucket]:
    return [
        Bucket(Limit("ip", ROOMY), address, "client address"),
        Bucket(Limit("member", ROOMY), member, "member"),
        Bucket(Limit("events", ROOMY), member, "member"),
    ]


async def timed(case: Case, n: int, concurrency: int, op: Callable[[int], Awaitable[object]]) -> None:
    per = n // concurrency

    async def worker(w: int) -> None:
        for i in range(per):
            t0 = time.perf_counter()
            await op(w * per + i)
            case.latencies.add(time.perf_counter() - t0)

    with case.timed():
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    case.n += per * concurrency


@register(
    "gateway_ratelimit",
    n=6_000,
    quick_n=1_200,
    description="the gateway's rate limits: all of a request's buckets in one GCRA UPSERT vs bare asyncpg",
)
async def bench(run: Run) -> None:
    configure_logging("bench", "WARNING")
    dsn = load_settings(SiyuSettings).postgres_dsn.rstrip("/")
    await _drop(dsn)
    await migrate("gateway", f"{dsn}/{DB}".replace("postgresql://", "postgresql+asyncpg://"))
    db = await Database(f"{dsn}/{DB}", producer="gateway", min_size=POOL, max_size=POOL).open()
    # Like shared.db's pool, without asyncpg's reset query on release (a second round trip per use).
    bare = await asyncpg.create_pool(f"{dsn}/{DB}", min_size=POOL, max_size=POOL, reset=_no_reset)
    limiter = RateLimiter(db, ApiLimits.from_settings(load_settings(GatewaySettings)))
    try:
        async with db.connection() as conn:
            run.facts["postgres"] = await conn.fetchval("SHOW server_version")
            run.facts["synchronous_commit (the table is UNLOGGED)"] = await conn.fetchval("SHOW synchronous_commit")
        for i in range(300):  # warm pools, statement caches and the table
            await limiter.check(buckets(f"warm-{i % 30}", f"10.0.0.{i % 30}"))

        async def floor(_: int) -> None:
            async with db.connection() as conn:
                await conn.fetchval("SELECT 1")

        def bare_check(keys: Callable[[int], list[Bucket]]) -> Callable[[int], Awaitable[object]]:
            async def op(i: int) -> object:
                b = sorted(keys(i), key=lambda x: x.row_key)
                async with bare.acquire() as conn:
                    return await conn.fetch(
                        CHECK_BUCKETS,
                        [x.row_key for x in b],
                        [x.limit.interval for x in b],
                        [x.limit.period for x in b],
                    )

            return op

        def one_statement(keys: Callable[[int], list[Bucket]]) -> Callable[[int], Awaitable[object]]:
            async def op(i: int) -> object:
                return await limiter.check(keys(i))

            return op

        def separate(keys: Callable[[int], list[Bucket]]) -> Callable[[int], Awaitable[object]]:
            async def op(i: int) -> object:
                return [await limiter.check([b]) for b in keys(i)]

            return op

        for shape, concurrency in (("sequential", 1), ("50 concurrent", CONCURRENCY)):
            for members in ("distinct members", "1 hot member"):
                prefix = uuid.uuid4().hex[:8]
                if members == "1 hot member":

                    def keys(i: int, p: str = prefix) -> list[Bucket]:
                        return buckets(f"{p}-hot", f"10.1.{i % 250}.{i % 200}")
                else:

                    def keys(i: int, p: str = prefix) -> list[Bucket]:
                        return buckets(f"{p}-{i}", f"10.2.{i % 250}.{i % 200}")

                group = f"{shape}, {members}"
                base = run.new_case("SELECT 1 (floor)", group=group, unit="checks/s", baseline=True, latency_of="query")
                raw = run.new_case(
                    "bare asyncpg, the same statement", group=group, unit="checks/s", baseline=True, latency_of="check"
                )
                ours = run.new_case(
                    "RateLimiter.check, 3 buckets, 1 statement",
                    group=group,
                    unit="checks/s",
                    compare_to=[base.name, raw.name],
                    latency_of="check",
                )
                old = run.new_case(
                    "3 buckets as 3 statements",
                    group=group,
                    unit="checks/s",
                    compare_to=[base.name, raw.name, ours.name],
                    latency_of="check",
                )
                base.name, raw.name = f"{base.name} [{group}]", f"{raw.name} [{group}]"
                ours.name, old.name = f"{ours.name} [{group}]", f"{old.name} [{group}]"
                ours.compare_to = (base.name, raw.name)
                old.compare_to = (base.name, raw.name, ours.name)
                for _ in range(2):  # alternate rounds
                    for case, op in (
                        (base, floor),
                        (raw, bare_check(keys)),
                        (ours, one_statement(keys)),
                        (old, separate(keys)),
                    ):
                        # sequential checks are a latency figure: fewer of them suffice
                        await timed(case, run.n // (2 if concurrency > 1 else 6), concurrency, op)
                for case in (base, raw, ours, old):
                    run.record(case)
        async with db.connection() as conn:
            rows = await conn.fetchval("SELECT count(*) FROM rate_limits")
        run.facts["buckets in the table at the end"] = rows
    finally:
        await bare.close()
        await db.close()
        await _drop(dsn)
