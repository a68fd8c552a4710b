"""Database plumbing shared by every service: the asyncpg pool, transient failures, the schema's
base model, migrations.

Each service owns one database, ``siyu_<service>``, created here if missing and migrated with the
service's own Alembic scripts (``services/<svc>/migrations``). The schema is declared with
SQLAlchemy (models.py, for Alembic); at run time every statement runs on asyncpg (:class:`Database`)
inside a :class:`shared.uow.UnitOfWork` or, for one-statement work, on :meth:`Database.connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiormq
import asyncpg
import orjson
from sqlalchemy import MetaData, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase

from shared.bus.outbox import Outbox
from shared.errors import ServiceUnavailable
from shared.observability import get_logger
from shared.uow import Isolation, UnitOfWork

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
    return orjson.dumps(value, default=_json_default).decode()


# --- transient failures ---------------------------------------------------------------------------

# SQLSTATE classes that say "the database, not your statement": connection (08), resources (53),
# operator intervention (57: shutdown, cannot connect now), and a transaction that lost a race
# (40001 serialization, 40P01 deadlock) and will pass when run again.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57")
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55000", "55006"})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says a dependency was away (database, broker, an upstream), not that the
    work itself is wrong: running the same work again later can succeed.

    Errors opt in with a ``transient = True`` attribute (``ServiceUnavailable``, WeChat's -1 and
    timeouts do). 55000/55006 are what a database refusing connections (``ALLOW_CONNECTIONS false``)
    or a dropped-while-in-use object answer.
    """
    if getattr(exc, "transient", False):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state in _TRANSIENT_SQLSTATES or state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # The client's protocol state, not the statement: seen when a backend is terminated while
        # the connection is idle ("cannot switch to state 11; another operation is in progress"),
        # and for a statement cache outdated by a schema change. A fresh connection passes.
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # Most interface errors are the caller's bug (a wrong number of arguments, an operation
        # already in progress): holding the event for those would stall it forever. Only a
        # connection or pool that is gone is the database being away.
        return any(m in str(exc) for m in _GONE_MESSAGES)
    # A refused or reset TCP connection (asyncpg, aio-pika's connection errors are OSErrors too),
    # a pool that timed out handing out a connection, a broker channel closed under us.
    return isinstance(exc, OSError | TimeoutError | aiormq.exceptions.ChannelInvalidStateError)


# asyncpg.InterfaceError messages that mean "the connection or pool is gone", not "wrong call".
_GONE_MESSAGES = ("connection is closed", "connection was closed", "pool is closing", "pool is closed")


# --- the runtime database: asyncpg ----------------------------------------------------------------


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=json_dumps, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, without asyncpg's reset query.

    The default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every
    release: a second round trip for every one-statement read or write. Siyu leaves no session
    state on a pooled connection (no SET, LISTEN only on connections of its own, advisory locks
    transaction-scoped or unlocked by their holder), and asyncpg still rolls back a transaction
    left open and drops listener callbacks before calling this.
    """


class Database:
    """A service's PostgreSQL at run time: one asyncpg pool.

    SQL lives in repositories as text and runs on asyncpg, which prepares each statement once per
    connection and keeps it (``statement_cache_size``): a statement is parsed and planned once, then
    every execution is a single Bind/Execute round trip. Measured against SQLAlchemy's async
    session on the same work this is 8-23x less CPU per request (bench/README.md), which is why the
    ORM is used only to declare the schema (models.py → Alembic), never at run time.
    """

    def __init__(
        self,
        dsn: str,
        *,
        producer: str = "siyu",
        min_size: int = 1,
        max_size: int = 10,
        acquire_timeout: float = 5.0,
        application_name: str = "siyu",
    ) -> None:
        self.dsn = _asyncpg_dsn(dsn)
        self.outbox = Outbox(producer)
        self.min_size = min_size
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.application_name = application_name
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database is not open: call Database.open() first")
        return self._pool

    async def open(self) -> Database:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                init=_init_connection,
                reset=_keep_session,
                statement_cache_size=1024,
                max_inactive_connection_lifetime=300,
                server_settings={"application_name": self.application_name},
                timeout=5,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            u = make_url(self.dsn)
            raise ServiceUnavailable(
                f"PostgreSQL database {u.database} is not reachable at {u.host}:{u.port or 5432} ({exc!r}). "
                "Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start), "
                "run the migrations (make run does), or set SIYU_POSTGRES_DSN."
            ) from exc
        return self

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), timeout=5)
            pool.terminate()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in autocommit: each statement is its own transaction.

        For reads and for writes that are one statement (a rate-limit UPSERT, the push store whose
        one statement carries its own outbox rows). Anything that takes two statements to be right
        goes through :meth:`unit_of_work`.
        """
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
            yield conn

    def unit_of_work(
        self,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        isolation: Isolation = "read_committed",
        readonly: bool = False,
    ) -> UnitOfWork:
        """A transaction and the events published in it (``async with db.unit_of_work() as uow``).

        ``readonly`` with ``repeatable_read`` gives a consistent snapshot across several reads.
        """
        return UnitOfWork(
            self,
            self.outbox,
            correlation_id=correlation_id,
            causation_id=causation_id,
            isolation=isolation,
            readonly=readonly,
        )

    @asynccontextmanager
    async def take_turns(self, job: str) -> AsyncIterator[bool]:
        """True while this process holds ``job``'s turn; False when another replica has it.

        For a periodic job that calls WeChat and commits in short units of work of its own: the
        turn is a session-level advisory lock on a connection opened for it, not a pooled one, so
        no pooled connection is held for the length of the job and closing the connection (also
        when the job is cancelled) always gives the turn back.
        """
        conn = await asyncpg.connect(self.dsn, timeout=5, server_settings={"application_name": self.application_name})
        try:
            held = bool(await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", job))
            yield held
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def ping(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - passed to asyncpg
        async with self.pool.acquire(timeout=timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)


def batch_delete_sql(table: str, where: str, batch: int = 5000) -> str:
    """The one statement :func:`delete_in_batches` repeats (tests EXPLAIN it to see its index)."""
    return f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {where} LIMIT {int(batch)}))"


async def delete_in_batches(db: Database, table: str, where: str, *args: object, batch: int = 5000) -> int:
    """Delete the rows of ``table`` matching ``where`` in short transactions of ``batch`` rows.

    ``table`` and ``where`` are the caller's constants, never input; values go in ``args`` ($1...).
    ``where`` should be served by an index (every retention predicate in Siyu is), or each batch
    scans the table again.
    """
    sql = batch_delete_sql(table, where, batch)
    total = 0
    while True:
        async with db.connection() as conn:
            status = await conn.execute(sql, *args)
        deleted = int(status.rsplit(" ", 1)[-1])
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
