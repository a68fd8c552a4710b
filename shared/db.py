"""Database plumbing shared by every service: engine, sessions, base model, migrations.

Each service owns one database, ``siyu_<service>``, created here if missing and migrated with the
service's own Alembic scripts (``services/<svc>/migrations``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import MetaData, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from shared.errors import ServiceUnavailable
from shared.observability import get_logger

log = get_logger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_base() -> type[DeclarativeBase]:
    """A declarative base with its own metadata and the constraint naming convention.

    Each service gets its own base (one metadata per database); the outbox and inbox tables are
    added to it by :func:`shared.bus.tables.bus_tables`.
    """

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    return Base


def _json_default(value: object) -> object:
    # WeChat JSON is parsed with Decimal for non-integers (never float on the way in); JSONB takes
    # them as numbers. Integers are already exact ints.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_dumps(value: object) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    return create_async_engine(
        url,
        json_serializer=json_dumps,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: with asyncpg it costs three round trips per checkout (BEGIN; SELECT; ROLLBACK),
        # measured at 1.2-1.4x on Outbox.add (bench/README.md). A dead connection fails its unit of
        # work, SQLAlchemy invalidates the pool, and the caller's retry (WeChat, the consumer) recovers.
        pool_pre_ping=False,
        pool_recycle=1800,
        echo=echo,
        connect_args={"server_settings": {"application_name": "siyu"}},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error. Services never commit."""
    async with sessions() as session, session.begin():
        yield session


async def delete_in_batches(
    sessions: async_sessionmaker[AsyncSession], table: str, where: str, params: dict[str, object], batch: int = 5000
) -> int:
    """Delete the rows of ``table`` matching ``where`` in short transactions of ``batch`` rows.

    ``table`` and ``where`` are the caller's constants, never input; values go in ``params``.
    """
    sql = text(f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {where} LIMIT {batch})")
    total = 0
    while True:
        async with sessions() as session, session.begin():
            result = await session.execute(sql, params)
        deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        if deleted < batch:
            return total


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


async def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist. Returns True when created."""
    name = make_url(url).database
    assert name, "the database URL names no database"
    try:
        conn = await asyncpg.connect(_asyncpg_dsn(url, "postgres"), timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(
            f"PostgreSQL is not reachable at {make_url(url).host}:{make_url(url).port or 5432} ({exc}). "
            "Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
            "or set SIYU_POSTGRES_DSN."
        ) from exc
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False  # created concurrently by another process
        log.info("database.created", database=name)
        return True
    finally:
        await conn.close()


def migrations_dir(service: str) -> Path:
    return Path(__file__).resolve().parent.parent / "services" / service / "migrations"


def alembic_config(service: str, url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir(service)))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["service"] = service
    return cfg


async def migrate(service: str, url: str, revision: str = "head") -> None:
    """Create the service database if needed and upgrade it to ``revision``."""
    from alembic import command

    await ensure_database(url)
    cfg = alembic_config(service, url)
    await asyncio.to_thread(command.upgrade, cfg, revision)


def run_migrations_online(target_metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py``: run Alembic over the async engine."""
    from alembic import context
    from sqlalchemy.engine import Connection
    from sqlalchemy.pool import NullPool

    url = context.config.get_main_option("sqlalchemy.url")
    assert url

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
    else:  # pragma: no cover - alembic is always driven from a worker thread here
        raise RuntimeError("run migrations from a thread: shared.db.migrate does")
