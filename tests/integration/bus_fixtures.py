"""Fixtures and helpers for the event-backbone tests (``test_backbone*.py``).

Everything here is real: a throwaway PostgreSQL database (``siyu_test_bus_<run>``) holding only the
``outbox``, ``inbox`` and an ``effects`` table, reached through the services' own
:class:`shared.db.Database`, and the broker under this run's namespace with short retry delays.
Consumers get names unique to the test; their queues are deleted afterwards.

:class:`TcpProxy` stands between a consumer (or a relay) and PostgreSQL so a test can take the
database away from that one process — cut every connection and refuse new ones — and give it back,
without touching the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import create_async_engine

from shared.bus.consumer import EventContext, Handler, InboxConsumer
from shared.bus.relay import OutboxRelay
from shared.bus.tables import inbox_table, outbox_table
from shared.bus.topology import Topology
from shared.db import Database
from shared.errors import ServiceUnavailable
from shared.events import EventData, register, registry
from shared.events.envelope import Envelope
from tests.conftest import AMQP, NAMESPACE, PG, RUN_ID
from tests.waiting import eventually  # noqa: F401 - re-exported: the backbone tests import it from here

DB_PREFIX = f"siyu_test_bus_{RUN_ID}"
PRODUCER = "bustest"
TOPOLOGY = Topology(namespace=NAMESPACE, retry_delays_ms=(200, 400))

metadata = MetaData()
OUTBOX = outbox_table(metadata)
INBOX = inbox_table(metadata)
# No unique constraint on purpose: a duplicated effect must show up as a second row, not as an error.
EFFECTS = Table(
    "effects",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("consumer", String(100), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("n", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
INSERT_EFFECT = "INSERT INTO effects (consumer, event_id, n) VALUES ($1, $2, $3)"


class ThingHappened(EventData):
    """The test event every consumer here handles."""

    event_type: ClassVar[str] = "bustest.thing.happened"

    n: int


class NobodyListens(EventData):
    """An event type no queue is ever bound to."""

    event_type: ClassVar[str] = "bustest.nobody.listens"

    n: int


# --------------------------------------------------------------------------------------------
# the database


@dataclass
class BusDB:
    """The bus test database, reached directly (never through a proxy): what the test itself sees."""

    db: Database
    name: str

    @property
    def dsn(self) -> str:
        return f"{PG}/{self.name}"

    async def sql(self, query: str, *args: Any) -> Any:
        async with self.db.connection() as conn:
            return await conn.fetchval(query, *args)

    async def truncate(self) -> None:
        async with self.db.connection() as conn:
            await conn.execute("TRUNCATE outbox, inbox, effects RESTART IDENTITY")

    async def effect_counts(self, consumer: str) -> Counter[uuid.UUID]:
        async with self.db.connection() as conn:
            rows = await conn.fetch("SELECT event_id FROM effects WHERE consumer = $1", consumer)
        return Counter(r["event_id"] for r in rows)

    async def inbox_ids(self, consumer: str) -> list[uuid.UUID]:
        async with self.db.connection() as conn:
            return [r["event_id"] for r in await conn.fetch("SELECT event_id FROM inbox WHERE consumer = $1", consumer)]

    async def outbox_rows(self) -> list[Any]:
        """Every outbox row (attribute access), plus ``due``: whether it is claimable now by the DB clock."""
        async with self.db.connection() as conn:
            rows = await conn.fetch("SELECT *, available_at <= now() AS due FROM outbox ORDER BY id")
        return [SimpleNamespace(**dict(r)) for r in rows]

    async def add_events(self, ns: Iterable[int], cls: type[EventData] = ThingHappened) -> list[uuid.UUID]:
        """Publish events through a unit of work, all in one committed transaction."""
        async with self.db.unit_of_work() as uow:
            return [uow.publish(cls(n=n)).event_id for n in ns]  # type: ignore[call-arg]


async def create_bus_db(name: str) -> BusDB:
    admin = await asyncpg.connect(f"{PG}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    # The schema comes from the same table definitions the services' migrations use.
    engine = create_async_engine(f"{PG}/{name}".replace("postgresql://", "postgresql+asyncpg://"))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    db = Database(f"{PG}/{name}", producer=PRODUCER, max_size=20, application_name="bustest")
    return BusDB(await db.open(), name)


async def drop_bus_db(db: BusDB) -> None:
    await db.db.close()
    admin = await asyncpg.connect(f"{PG}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
    finally:
        await admin.close()


# --------------------------------------------------------------------------------------------
# taking the database away from one process


class TcpProxy:
    """A TCP proxy to PostgreSQL (or RabbitMQ) on 127.0.0.1 that a test can cut and restore.

    ``cut()`` drops every proxied connection at once and resets every new one (the client sees
    its connection die, then "connection reset" on each attempt: the server is unreachable for
    whoever goes through this proxy); ``restore()`` lets connections through again. Only the
    process pointed at :meth:`dsn` (or :meth:`amqp_url`) is affected; the server and every other
    client carry on.
    """

    def __init__(self, target: str = PG) -> None:
        u = urlsplit(target)
        self.target = u
        self.target_host = u.hostname or "127.0.0.1"
        self.target_port = u.port or (5672 if u.scheme.startswith("amqp") else 5432)
        self.port = 0
        self.up = True
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def amqp_url(self) -> str:
        """The broker URL it proxies, with this proxy's address."""
        credentials = self.target.netloc.rpartition("@")[0]
        return self.target._replace(netloc=f"{credentials}@127.0.0.1:{self.port}").geturl()

    def cut(self) -> None:
        self.up = False
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _reset(writer)
            return
        if not self.up:  # cut while connecting upstream
            _reset(writer)
            _reset(up_writer)
            return
        self.accepted += 1
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer learns at once, as when a host or link dies."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None and sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --------------------------------------------------------------------------------------------
# consumers that record what they saw (the real InboxConsumer underneath)


@dataclass
class Behaviour:
    """The test handler's dependencies: its consumer, whether to fail, and when it was called."""

    consumer: str = ""
    fail: str | None = None  # raise RuntimeError(fail): a deterministic failure
    unavailable: str | None = None  # raise ServiceUnavailable(unavailable): a transient failure
    calls: list[tuple[float, uuid.UUID]] = field(default_factory=list)
    # While cleared, the consumer waits after committing an effect, before acknowledging it
    # (see ``RecordingConsumer.handle``); ``held`` counts the messages caught there.
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0

    def __post_init__(self) -> None:
        self.gate.set()


async def record_effect(data: ThingHappened, ctx: EventContext[Behaviour]) -> None:
    """The handler: one row in ``effects`` per run, in the inbox's unit of work."""
    ctx.deps.calls.append((time.monotonic(), ctx.envelope.event_id))
    if ctx.deps.unavailable:
        raise ServiceUnavailable(ctx.deps.unavailable)
    await ctx.uow.conn.execute(INSERT_EFFECT, ctx.deps.consumer, ctx.envelope.event_id, data.n)
    if ctx.deps.fail:
        raise RuntimeError(ctx.deps.fail)


@dataclass
class Delivery:
    at: float
    message_id: str | None
    attempt: Any
    redelivered: bool | None
    headers: dict[str, Any]


class RecordingConsumer(InboxConsumer[Behaviour]):
    """An :class:`InboxConsumer` that remembers every delivery and every ``handle`` outcome."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliveries: list[Delivery] = []
        self.outcomes: list[str] = []
        self.statuses: list[str] = []  # every distinct pause reason seen while handling

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        self.deliveries.append(
            Delivery(time.monotonic(), message.message_id, headers.get("x-siyu-attempt"), message.redelivered, headers)
        )
        await super()._on_message(message)

    async def handle(self, body: bytes) -> str:
        try:
            outcome = await super().handle(body)
        except Exception as exc:
            self.outcomes.append(f"raised {exc.__class__.__name__}")
            raise
        self.outcomes.append(outcome)
        gate = self.deps.gate
        if not gate.is_set():  # committed, not yet acknowledged
            self.deps.held += 1
            await gate.wait()
        return outcome

    async def _pause(self, exc: BaseException) -> None:
        await super()._pause(exc)
        if self.status and (not self.statuses or self.statuses[-1] != self.status):
            self.statuses.append(self.status)


# --------------------------------------------------------------------------------------------
# the per-test harness


class Bus:
    """One test's view of the backbone: its connections, databases, consumers, relays and probes."""

    def __init__(self, db: BusDB, admin: AbstractRobustConnection, test_name: str) -> None:
        self.db = db
        self.admin = admin
        self.tag = f"{test_name[:24]}-{secrets.token_hex(2)}".replace("_", "-").replace("[", "-").replace("]", "")
        self.connections: list[AbstractRobustConnection] = []
        self.databases: list[Database] = []
        self.proxies: list[TcpProxy] = []
        self.consumers: list[InboxConsumer[Any]] = []
        self.consumer_names: list[str] = []
        self.extra_queues: list[str] = []  # queues a test declared by hand, deleted with the harness
        self.relay_tasks: list[asyncio.Task[None]] = []
        self.relays: list[OutboxRelay] = []

    def connection_name(self, role: str) -> str:
        return f"siyu-bustest-{RUN_ID}-{self.tag}-{role}"

    async def connect(self, role: str, *, reconnect_interval: float = 0.3, url: str = AMQP) -> AbstractRobustConnection:
        connection = await aio_pika.connect_robust(
            url,
            client_properties={"connection_name": self.connection_name(role)},
            reconnect_interval=reconnect_interval,
        )
        self.connections.append(connection)
        return connection

    async def proxy(self, target: str = PG) -> TcpProxy:
        proxy = await TcpProxy(target).start()
        self.proxies.append(proxy)
        return proxy

    async def database(self, dsn: str, **kw: Any) -> Database:
        """A service-like :class:`Database` on ``dsn`` (e.g. a proxy's), closed with the harness."""
        db = await Database(dsn, producer=PRODUCER, application_name="bustest", **kw).open()
        self.databases.append(db)
        return db

    def consumer_name(self, name: str) -> str:
        consumer_name = f"bus-{self.tag}-{name}"
        self.consumer_names.append(consumer_name)
        return consumer_name

    async def consumer(
        self,
        name: str,
        *,
        handlers: Mapping[str, Handler] | None = None,
        deps: Behaviour | None = None,
        connection: AbstractRobustConnection | None = None,
        db: Database | None = None,
        prefetch: int = 32,
        topology: Topology = TOPOLOGY,
        **kw: Any,
    ) -> RecordingConsumer:
        consumer_name = self.consumer_name(name)
        deps = deps or Behaviour()
        deps.consumer = consumer_name
        consumer = RecordingConsumer(
            consumer_name,
            db or self.db.db,
            connection or await self.connect(f"consumer-{name}"),
            topology,
            handlers or {ThingHappened.event_type: record_effect},
            deps,
            prefetch=prefetch,
            **kw,
        )
        await consumer.start()
        self.consumers.append(consumer)
        return consumer

    def relay(
        self,
        cls: type[OutboxRelay] = OutboxRelay,
        *,
        connection: AbstractRobustConnection,
        db: Database | None = None,
        **kw: Any,
    ) -> Any:
        relay = cls(db or self.db.db, connection, TOPOLOGY, PRODUCER, **kw)
        self.relays.append(relay)
        return relay

    def run_relay(self, relay: OutboxRelay) -> asyncio.Task[None]:
        task = asyncio.create_task(relay.run())
        self.relay_tasks.append(task)
        return task

    async def probe(self, *routing_keys: str) -> tuple[AbstractQueue, list[AbstractIncomingMessage]]:
        """An exclusive queue on the run's exchange; returns it and the list its messages land in."""
        channel = await self.admin.channel()
        exchange = await TOPOLOGY.declare_exchanges(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        seen: list[AbstractIncomingMessage] = []

        async def on_message(message: AbstractIncomingMessage) -> None:
            seen.append(message)

        await queue.consume(on_message, no_ack=True)
        return queue, seen

    async def publish_raw(
        self,
        body: bytes,
        *,
        routing_key: str,
        message_id: str | None = None,
        event_type: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish straight to a queue (default exchange) or the topic exchange, with confirms."""
        channel = await self.admin.channel(publisher_confirms=True)
        try:
            message = aio_pika.Message(
                body=body,
                message_id=message_id,
                type=event_type,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            if routing_key.startswith(NAMESPACE):  # a queue name
                await channel.default_exchange.publish(message, routing_key=routing_key, mandatory=True)
            else:
                exchange = await TOPOLOGY.declare_exchanges(channel)
                await exchange.publish(message, routing_key=routing_key, mandatory=True)
        finally:
            await channel.close()

    async def publish_envelope(self, envelope: Envelope) -> None:
        await self.publish_raw(
            envelope.model_dump_json().encode(),
            routing_key=envelope.type,
            message_id=str(envelope.event_id),
            event_type=envelope.type,
        )

    async def queue_depth(self, name: str) -> int:
        """Messages ready in a queue (0 when it does not exist)."""
        channel = await self.admin.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0
        else:
            return int(queue.declaration_result.message_count or 0)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def close(self) -> None:
        for relay in self.relays:
            relay.stop()
        for task in self.relay_tasks:
            try:
                await asyncio.wait_for(task, timeout=5)
            except Exception:  # teardown: a failure was already reported by the test
                task.cancel()
        for consumer in self.consumers:
            try:
                await consumer.stop()
            except Exception:  # noqa: S110 - a stopped connection is fine here
                pass
        for connection in self.connections:
            try:
                await connection.close()
            except Exception:  # noqa: S110
                pass
        for proxy in self.proxies:
            proxy.restore()  # let the pools close their connections cleanly
        for db in self.databases:
            await db.close()
        for proxy in self.proxies:
            await proxy.close()
        channel = await self.admin.channel()
        try:
            for q in [*(q for name in self.consumer_names for q in TOPOLOGY.queues(name)), *self.extra_queues]:
                await channel.queue_delete(q)
        finally:
            await channel.close()


# --------------------------------------------------------------------------------------------
# the broker's side of a connection


def rabbitmqctl_or_skip() -> str:
    path = shutil.which("rabbitmqctl")
    if path is None:
        pytest.skip("rabbitmqctl is not on PATH: cannot close connections from the broker's side")
    probe = subprocess.run([path, "-q", "list_connections", "pid"], capture_output=True, text=True, timeout=30)  # noqa: S603
    if probe.returncode != 0:
        reason = probe.stderr.strip()[:200]
        pytest.skip(f"rabbitmqctl cannot talk to the broker here (exit {probe.returncode}): {reason}")
    return path


def close_connections_named(rabbitmqctl: str, prefix: str) -> int:
    """Close, from the server side, every connection whose client-given name starts with ``prefix``.

    Only this test's connections are touched (other work may share the broker). Returns how many.
    """
    # Plain output: "<pid>\t<client properties>" per line, the pid in the form close_connection takes.
    out = subprocess.run(  # noqa: S603
        [rabbitmqctl, "-s", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pids = [
        pid
        for pid, _, props in (line.partition("\t") for line in out.stdout.splitlines())
        if f'{{"connection_name","{prefix}' in props
    ]

    def close(pid: str) -> None:
        subprocess.run(  # noqa: S603
            [rabbitmqctl, "-q", "close_connection", pid, "siyu backbone test: simulated broker failure"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )

    with ThreadPoolExecutor(max_workers=max(1, len(pids))) as pool:  # all at once, as a broker restart would
        list(pool.map(close, pids))
    return len(pids)


def list_queues(rabbitmqctl: str, prefix: str, *columns: str) -> dict[str, list[str]]:
    """``rabbitmqctl list_queues name <columns>`` for the queues whose name starts with ``prefix``."""
    out = subprocess.run(  # noqa: S603
        [rabbitmqctl, "-s", "list_queues", "name", *columns],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = (line.split("\t") for line in out.stdout.splitlines())
    return {r[0]: r[1:] for r in rows if r and r[0].startswith(prefix)}


# --------------------------------------------------------------------------------------------
# pytest fixtures (imported by the test_backbone*.py modules)


@pytest.fixture(scope="module")
def bus_events() -> Iterable[None]:
    register(ThingHappened)
    register(NobodyListens)
    yield
    registry.pop(ThingHappened.event_type, None)
    registry.pop(NobodyListens.event_type, None)


@pytest.fixture(scope="module")
async def bus_db(bus_events: None, request: pytest.FixtureRequest) -> AsyncIterator[BusDB]:
    """The module's own bus database (modules may run at once in parallel workers)."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    db = await create_bus_db(f"{DB_PREFIX}_{module}"[:63])
    yield db
    await drop_bus_db(db)


@pytest.fixture
async def bus(bus_db: BusDB, amqp: AbstractRobustConnection, request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """A clean database and a harness that removes this test's connections and queues afterwards.

    Depends on the session's ``amqp`` fixture, which removes the run's exchanges at the end.
    """
    await bus_db.truncate()
    harness = Bus(bus_db, amqp, request.node.name)
    yield harness
    await harness.close()
