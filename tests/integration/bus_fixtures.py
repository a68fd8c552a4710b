"""Fixtures and helpers for the event-backbone tests (``test_backbone.py``).

Everything here is real: a throwaway PostgreSQL database (``siyu_test_bus_<run>``) holding only the
``outbox``, ``inbox`` and an ``effects`` table, and the broker under this run's namespace with
short retry delays. Consumers get names unique to the test; their queues are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, func, insert, select, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.bus.consumer import EventContext, Handler, InboxConsumer
from shared.bus.outbox import Outbox, OutboxRelay
from shared.bus.tables import inbox_table, outbox_table
from shared.bus.topology import Topology
from shared.db import create_sessionmaker
from shared.events import EventData, register, registry
from shared.events.envelope import Envelope
from tests.conftest import AMQP, NAMESPACE, PG, RUN_ID
from tests.waiting import eventually  # noqa: F401 - re-exported: the backbone tests import it from here

DB_NAME = f"siyu_test_bus_{RUN_ID}"
DB_DSN = f"{PG}/{DB_NAME}"
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
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    dsn: str = DB_DSN

    async def truncate(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text("TRUNCATE outbox, inbox, effects RESTART IDENTITY"))

    async def effect_counts(self, consumer: str) -> Counter[uuid.UUID]:
        async with self.sessions() as s:
            rows = (await s.execute(select(EFFECTS.c.event_id).where(EFFECTS.c.consumer == consumer))).scalars()
            return Counter(rows)

    async def inbox_ids(self, consumer: str) -> list[uuid.UUID]:
        async with self.sessions() as s:
            return list((await s.execute(select(INBOX.c.event_id).where(INBOX.c.consumer == consumer))).scalars())

    async def outbox_rows(self) -> list[Any]:
        async with self.sessions() as s:
            return list((await s.execute(select(OUTBOX).order_by(OUTBOX.c.id))).all())

    async def add_events(
        self, outbox: Outbox, ns: Iterable[int], cls: type[EventData] = ThingHappened
    ) -> list[uuid.UUID]:
        """Write events through the outbox, all in one committed transaction."""
        async with self.sessions() as session, session.begin():
            return [(await outbox.add(session, cls(n=n))).event_id for n in ns]  # type: ignore[call-arg]


async def create_bus_db() -> BusDB:
    admin = await asyncpg.connect(f"{PG}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()
    engine = create_async_engine(DB_DSN.replace("postgresql://", "postgresql+asyncpg://"), pool_size=20)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return BusDB(engine, create_sessionmaker(engine))


async def drop_bus_db(db: BusDB) -> None:
    await db.engine.dispose()
    admin = await asyncpg.connect(f"{PG}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    finally:
        await admin.close()


# --------------------------------------------------------------------------------------------
# consumers that record what they saw (the real InboxConsumer underneath)


@dataclass
class Behaviour:
    """The test handler's dependencies: its consumer, whether to fail, and when it was called."""

    consumer: str = ""
    fail: str | None = None
    calls: list[tuple[float, uuid.UUID]] = field(default_factory=list)
    # While cleared, the consumer waits after committing an effect, before acknowledging it
    # (see ``RecordingConsumer.handle``); ``held`` counts the messages caught there.
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0

    def __post_init__(self) -> None:
        self.gate.set()


async def record_effect(data: ThingHappened, ctx: EventContext[Behaviour]) -> None:
    """The handler: one row in ``effects`` per run, in the inbox's transaction."""
    ctx.deps.calls.append((time.monotonic(), ctx.envelope.event_id))
    await ctx.session.execute(
        insert(EFFECTS).values(consumer=ctx.deps.consumer, event_id=ctx.envelope.event_id, n=data.n)
    )
    if ctx.deps.fail:
        raise RuntimeError(ctx.deps.fail)


@dataclass
class Delivery:
    at: float
    message_id: str | None
    attempt: Any
    redelivered: bool | None
    headers: dict[str, Any]


class RecordingConsumer(InboxConsumer):
    """An :class:`InboxConsumer` that remembers every delivery and every ``handle`` outcome."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliveries: list[Delivery] = []
        self.outcomes: list[str] = []

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
        gate = getattr(self.deps, "gate", None)
        if gate is not None and not gate.is_set():  # committed, not yet acknowledged
            self.deps.held += 1
            await gate.wait()
        return outcome


# --------------------------------------------------------------------------------------------
# the per-test harness


class Bus:
    """One test's view of the backbone: its connections, consumers, relays and probe queues."""

    def __init__(self, db: BusDB, admin: AbstractRobustConnection, test_name: str) -> None:
        self.db = db
        self.admin = admin
        self.tag = f"{test_name[:24]}-{secrets.token_hex(2)}".replace("_", "-")
        self.outbox = Outbox(OUTBOX, PRODUCER)
        self.connections: list[AbstractRobustConnection] = []
        self.consumers: list[InboxConsumer] = []
        self.consumer_names: list[str] = []
        self.relay_tasks: list[asyncio.Task[None]] = []
        self.relays: list[OutboxRelay] = []

    def connection_name(self, role: str) -> str:
        return f"siyu-bustest-{RUN_ID}-{self.tag}-{role}"

    async def connect(self, role: str, *, reconnect_interval: float = 0.3) -> AbstractRobustConnection:
        connection = await aio_pika.connect_robust(
            AMQP,
            client_properties={"connection_name": self.connection_name(role)},
            reconnect_interval=reconnect_interval,
        )
        self.connections.append(connection)
        return connection

    async def consumer(
        self,
        name: str,
        *,
        handlers: Mapping[str, Handler] | None = None,
        deps: Behaviour | None = None,
        connection: AbstractRobustConnection | None = None,
        prefetch: int = 32,
        topology: Topology = TOPOLOGY,
    ) -> RecordingConsumer:
        consumer_name = f"bus-{self.tag}-{name}"
        self.consumer_names.append(consumer_name)
        deps = deps or Behaviour()
        deps.consumer = consumer_name
        consumer = RecordingConsumer(
            consumer_name,
            self.db.sessions,
            INBOX,
            self.outbox,
            connection or await self.connect(f"consumer-{name}"),
            topology,
            handlers or {ThingHappened.event_type: record_effect},
            deps,
            prefetch=prefetch,
        )
        await consumer.start()
        self.consumers.append(consumer)
        return consumer

    def relay(self, cls: type[OutboxRelay] = OutboxRelay, *, connection: AbstractRobustConnection, **kw: Any) -> Any:
        relay = cls(self.db.sessions, OUTBOX, connection, TOPOLOGY, PRODUCER, **kw)
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
        channel = await self.admin.channel()
        try:
            for name in self.consumer_names:
                queues = [TOPOLOGY.queue(name), TOPOLOGY.dlq(name)]
                queues += [TOPOLOGY.retry_queue(name, a)[0] for a in range(1, len(TOPOLOGY.retry_delays_ms) + 1)]
                for q in queues:
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
    closed = len(pids)
    return closed


# --------------------------------------------------------------------------------------------
# pytest fixtures (imported by test_backbone.py)


@pytest.fixture(scope="module")
def bus_events() -> Iterable[None]:
    register(ThingHappened)
    register(NobodyListens)
    yield
    registry.pop(ThingHappened.event_type, None)
    registry.pop(NobodyListens.event_type, None)


@pytest.fixture(scope="module")
async def bus_db(bus_events: None) -> AsyncIterator[BusDB]:
    db = await create_bus_db()
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
