"""Test set-up: real PostgreSQL and RabbitMQ, isolated from a running `make run`.

Every run gets its own databases (``siyu_test_<run>_<service>``, migrated from scratch) and its
own broker namespace (exchange and queue names prefixed with the run id), removed at the end, so
two runs on one machine (or a `make run`) never see each other's data.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = secrets.token_hex(3)
NAMESPACE = f"test-{RUN_ID}."
PG = os.environ.get("SIYU_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
AMQP = os.environ.get("SIYU_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SERVICES = ("gateway", "identity", "commerce", "notify")

os.environ.update(
    {
        "SIYU_ENV": "test",
        "SIYU_AMQP_NAMESPACE": NAMESPACE,
        "SIYU_WECHAT_APPS_FILE": str(ROOT / "deploy" / "dev" / "wechat-apps.yaml"),
        "SIYU_LOG_LEVEL": "WARNING",
        # In-process apps relay their own outbox; the e2e stack runs the relay process instead.
        "SIYU_RELAY_IN_PROCESS": "true",
    }
)
for _svc in SERVICES:
    os.environ[f"{_svc.upper()}_DATABASE_URL"] = f"{PG}/siyu_test_{RUN_ID}_{_svc}"

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402
import pytest  # noqa: E402
from aio_pika.abc import AbstractRobustConnection  # noqa: E402

from shared.bus.topology import Topology  # noqa: E402


def db_name(service: str) -> str:
    return f"siyu_test_{RUN_ID}_{service}"


def db_url(service: str) -> str:
    return f"{PG}/{db_name(service)}"


async def _recreate_and_migrate(service: str) -> None:
    from shared.db import migrate

    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db_name(service)}" WITH (FORCE)')
    finally:
        await conn.close()
    await migrate(service, db_url(service).replace("postgresql://", "postgresql+asyncpg://"))


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[dict[str, str]]:
    """Fresh, migrated databases for every service, once per run."""
    for service in SERVICES:
        await _recreate_and_migrate(service)
    yield {s: db_url(s) for s in SERVICES}
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        for service in SERVICES:
            await conn.execute(f'DROP DATABASE IF EXISTS "{db_name(service)}" WITH (FORCE)')
    finally:
        await conn.close()


async def truncate(service: str) -> None:
    conn = await asyncpg.connect(db_url(service))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def clean_databases(databases: dict[str, str]) -> dict[str, str]:
    for service in SERVICES:
        await truncate(service)
    return databases


async def delete_namespace(namespace: str) -> None:
    """Remove every queue and exchange a namespace may hold (all consumers, probes, benchmarks)."""
    from services.manifests import CONSUMERS

    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        topology = Topology(namespace=namespace)
        for consumer in [*CONSUMERS, "probe", "bench"]:
            names = [topology.queue(consumer), topology.dlq(consumer)]
            names += [topology.retry_queue(consumer, a)[0] for a in range(1, len(topology.retry_delays_ms) + 1)]
            for name in names:
                await channel.queue_delete(name)
        await channel.exchange_delete(topology.exchange)
        await channel.exchange_delete(topology.dead_letter_exchange)


@pytest.fixture(scope="session")
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP)
    yield connection
    await connection.close()
    await delete_namespace(NAMESPACE)


@pytest.fixture
async def event_probe(amqp: AbstractRobustConnection) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A queue bound to every event on this run's ``siyu.events``: what was published, exactly."""
    channel = await amqp.channel()
    topology = Topology(namespace=NAMESPACE)
    exchange = await topology.declare_exchanges(channel)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="#")
    yield queue
    # Exclusive queues live as long as the connection (the whole run): delete it now, or it would
    # make every later event routable.
    await queue.delete(if_unused=False, if_empty=False)
    await channel.close()
