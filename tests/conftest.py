"""Test set-up: real PostgreSQL and RabbitMQ, isolated from a running `make run` and from other runs.

A run is one ``pytest`` invocation; with pytest-xdist it has several worker processes. Names:

* ``RUN``: chosen by the controller (or a plain ``pytest``), inherited by its workers;
* ``RUN_ID`` = ``<RUN>_<worker>`` (``gw0``, ``gw1``, … or ``main`` without xdist): everything a
  process owns carries it, so workers never share a row or a queue.

Databases: the four service databases are migrated ONCE per run into template databases
(``siyu_test_<RUN>_template_<service>``), under a PostgreSQL advisory lock so workers do not race;
each worker then clones its own ``siyu_test_<RUN_ID>_<service>`` (``CREATE DATABASE … TEMPLATE``
copies files, far faster than migrating). Broker: each worker has its own namespace
(``test-<RUN_ID>.``: exchange and queue names). A worker removes its databases and namespace when
it finishes; the controller then drops the templates and anything a crashed worker left behind.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if "PYTEST_XDIST_WORKER" in os.environ:
    # An xdist worker: spawned by the controller after it imported this module and set the run.
    WORKER = os.environ["PYTEST_XDIST_WORKER"]
    RUN = os.environ.get("SIYU_TEST_RUN") or os.environ["PYTEST_XDIST_TESTRUNUID"][:8]
else:
    WORKER = "main"
    RUN = os.environ["SIYU_TEST_RUN"] = secrets.token_hex(4)
RUN_ID = f"{RUN}_{WORKER}"
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
# The test server speaks plain TCP on loopback: without this every asyncpg connection first builds
# a TLS context and asks for TLS (sslmode "prefer"), a large share of the suite's CPU time.
os.environ.setdefault("PGSSLMODE", "disable")
for _svc in SERVICES:
    os.environ[f"{_svc.upper()}_DATABASE_URL"] = f"{PG}/siyu_test_{RUN_ID}_{_svc}"

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402
import pytest  # noqa: E402
from aio_pika.abc import AbstractRobustConnection  # noqa: E402

from shared.bus.topology import Topology  # noqa: E402

# --------------------------------------------------------------------------------------------
# databases


def db_name(service: str) -> str:
    return f"siyu_test_{RUN_ID}_{service}"


def db_url(service: str) -> str:
    return f"{PG}/{db_name(service)}"


def template_name(service: str) -> str:
    return f"siyu_test_{RUN}_template_{service}"


_touched_postgres = False  # this process created databases: the run's end must look for leftovers
_templates_ready = False


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(f"{PG}/postgres")


async def _ensure_templates() -> None:
    """Migrate each service's template database once per run, whichever worker gets here first."""
    global _templates_ready
    if _templates_ready:
        return
    from shared.db import migrate

    conn = await _admin()
    try:
        # Session-level lock, released with the connection even if this process dies mid-way.
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", f"siyu_test_templates_{RUN}")
        ready = {
            r["datname"]
            for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datistemplate AND starts_with(datname, $1)",
                f"siyu_test_{RUN}_template_",
            )
        }
        for service in SERVICES:
            name = template_name(service)
            if name in ready:
                continue
            # Marked a template only once fully migrated: a half-migrated one is redone.
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await migrate(service, f"{PG}/{name}".replace("postgresql://", "postgresql+asyncpg://"))
            await conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        _templates_ready = True
    finally:
        await conn.close()  # releases the lock


async def clone_database(service: str, name: str) -> str:
    """A fresh database ``name`` holding ``service``'s migrated schema (from the run's template)."""
    global _touched_postgres
    _touched_postgres = True
    await _ensure_templates()
    conn = await _admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name(service)}"')
    finally:
        await conn.close()
    return f"{PG}/{name}"


async def drop_database(name: str) -> None:
    conn = await _admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[dict[str, str]]:
    """This worker's migrated databases for every service, once per worker."""
    urls = {service: await clone_database(service, db_name(service)) for service in SERVICES}
    yield urls
    for service in SERVICES:
        await drop_database(db_name(service))


_tables: dict[str, str] = {}  # service -> the statements that empty its database (the schema is fixed)


async def truncate(service: str) -> None:
    """Empty every table of this worker's ``service`` database and restart its sequences.

    DELETE, not TRUNCATE: the tables hold a handful of rows, and TRUNCATE makes new files for every
    table (about 0.3 s for identity's 17), before every test. Triggers are off for the transaction
    (``session_replication_role``), so foreign keys need no particular order, as with CASCADE.
    """
    conn = await asyncpg.connect(db_url(service))
    try:
        if service not in _tables:
            tables = await conn.fetch(
                "SELECT format('%I', tablename) FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
            sequences = await conn.fetch(
                "SELECT format('%I', sequencename) FROM pg_sequences WHERE schemaname = 'public'"
            )
            _tables[service] = "".join(
                [f"DELETE FROM {t[0]};" for t in tables] + [f"ALTER SEQUENCE {s[0]} RESTART;" for s in sequences]
            )
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica;" + _tables[service])
    finally:
        await conn.close()


@pytest.fixture
async def clean_databases(databases: dict[str, str]) -> dict[str, str]:
    for service in SERVICES:
        await truncate(service)
    return databases


# --------------------------------------------------------------------------------------------
# the broker


async def delete_namespace(namespace: str) -> None:
    """Remove every queue and exchange a namespace may hold (all consumers, probes, benchmarks)."""
    from services.manifests import CONSUMERS

    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        await Topology(namespace=namespace).delete_all(channel, [*CONSUMERS, "probe", "bench"])


@pytest.fixture(scope="session")
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP)
    yield connection
    await connection.close()
    await delete_namespace(NAMESPACE)


@pytest.fixture
async def event_probe(amqp: AbstractRobustConnection) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A queue bound to every event on this worker's ``siyu.events``: what was published, exactly."""
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


# --------------------------------------------------------------------------------------------
# xdist: which worker runs what (in the controller)

E2E = "tests/e2e/"


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, with every e2e test in one unit: the worker that runs them starts one stack.

    Whole files go to a worker, so module fixtures (an app, a database) are set up once, not once
    per worker that happens to get one of the module's tests. ``--dist loadgroup`` with
    ``xdist_group`` would be the usual way to keep the e2e tests together, but with pytest 9.2 and
    pytest-xdist 3.8 it silently groups nothing (pytest-dev/pytest-xdist#1386); the file path is
    all a scheduler needs.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesAndOneStack(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return E2E if nodeid.startswith(E2E) else super()._split_scope(nodeid)

    return FilesAndOneStack(config, log)


# --------------------------------------------------------------------------------------------
# the end of a run (in the xdist controller, or in a plain `pytest`)

_crashed_workers: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object | None) -> None:
    """xdist: a worker finished; note whether it used PostgreSQL, or died before cleaning up."""
    global _touched_postgres
    if getattr(node, "workeroutput", {}).get("siyu_touched_postgres") or error is not None:
        _touched_postgres = True
    if error is not None:
        _crashed_workers.append(node.gateway.id)  # type: ignore[attr-defined]


async def _sweep_run() -> None:
    """Drop the run's templates and any database a worker left; delete crashed workers' namespaces."""
    if _touched_postgres:
        conn = await _admin()
        try:
            # Every database of this run, whatever a module named it: siyu_test_..._<RUN>_...
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE starts_with(datname, 'siyu_test_') AND strpos(datname, $1) > 0",
                f"_{RUN}_",
            )
            for r in rows:
                await conn.execute(f'ALTER DATABASE "{r["datname"]}" WITH IS_TEMPLATE false')
                await conn.execute(f'DROP DATABASE IF EXISTS "{r["datname"]}" WITH (FORCE)')
        finally:
            await conn.close()
    for worker in _crashed_workers:
        for namespace in (f"test-{RUN}_{worker}.", f"test-{RUN}_{worker}.e2e."):
            await delete_namespace(namespace)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):
        # A worker: its fixtures cleaned up after it; tell the controller whether to sweep the run.
        session.config.workeroutput["siyu_touched_postgres"] = _touched_postgres
        return
    asyncio.run(_sweep_run())
