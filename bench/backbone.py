"""The event backbone against raw aio-pika and asyncpg, on the real broker and database.

Groups (every ratio compares cases of this run; see ``bench/README.md``):

``publish``  raw aio-pika publishing with confirms, 1 in flight and a relay batch in flight,
             versus :class:`OutboxRelay` draining a pre-filled outbox (``relay_once`` until it
             claims 0).
``produce``  one event per transaction, sequentially: a bare ``INSERT`` of the same row with
             asyncpg (autocommit, and in a pooled transaction), ``UnitOfWork.publish`` (a
             service's unit of work: pooled connection, transaction, the outbox statement at
             commit) and ``Outbox.write`` as one autocommitted statement (the hot-path form).
``consume``  a pre-loaded quorum queue drained by a raw consumer that only acks, one that
             ``INSERT``s the effect with asyncpg, one that writes inbox + effect in one asyncpg
             transaction, and :class:`InboxConsumer` whose handler ``INSERT``s the effect.

Within a group, cases alternate over ``ROUNDS`` rounds (baseline, measured, baseline, measured…)
so that load from elsewhere on the machine drifts over all of them rather than one.

Everything lives in its own database (``siyu_bench``, dropped at the end) and under its own
broker namespace (``bench-<random>.``, whose queues and exchanges are deleted at the end).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import create_async_engine

from bench import register
from bench.harness import Case, Latencies, Run, summarize_latencies
from services.relay import RelaySettings
from shared.bus.consumer import EventContext, InboxConsumer
from shared.bus.relay import OutboxRelay, _Outcomes
from shared.bus.tables import inbox_table, outbox_table
from shared.bus.topology import Topology
from shared.db import Database
from shared.events import WeChatPushReceived
from shared.events.envelope import Envelope
from shared.observability import configure_logging
from shared.settings import ServiceSettings, SiyuSettings, load_settings

DB_NAME = "siyu_bench"
EVENT_TYPE = "wechat.oa.subscribe"  # a real routed type; its data model needs no registration
PRODUCER = "bench"
# The defaults the processes run with: the relay process's batch, a service's prefetch and pool.
RELAY_BATCH: int = RelaySettings.model_fields["relay_batch_size"].default
WINDOW = RELAY_BATCH  # in-flight publishes of the windowed baseline = one relay batch
PREFETCH: int = ServiceSettings.model_fields["consumer_prefetch"].default
POOL_SIZE: int = ServiceSettings.model_fields["db_pool_size"].default
LOAD_TX = 500  # events per transaction when filling the outbox outside the timed section
LOAD_CONCURRENCY = 4  # fill transactions in parallel (set-up only: nothing else runs meanwhile)
ROUNDS = 2  # publish and consume groups
PRODUCE_ROUNDS = 4  # the produce cases are short and sensitive to drifting load: alternate more

# Events per case, as a fraction of the run's n (20 000 by default): sized so that the whole run
# stays near two to three minutes on 2 cores. Each case's n is in the results.
PUBLISH_SHARE = 1 / 2  # windowed baseline and relay drain
SERIAL_SHARE = 1 / 8  # one publish in flight is the slowest publisher
PRODUCE_SHARE = 1 / 8  # each of the one-event-per-transaction cases
CONSUME_SHARE = 1 / 4  # each consumer

SINK, INBOX_C, RAW_ACK, RAW_INSERT, RAW_INBOX = "sink", "inbox", "raw-ack", "raw-insert", "raw-inbox"
CONSUMERS = (SINK, INBOX_C, RAW_ACK, RAW_INSERT, RAW_INBOX)

metadata = MetaData()
outbox_table(metadata)
inbox_table(metadata)
EFFECTS = Table(
    "effects",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("consumer", String(100), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
# Same shape, indexes and defaults as ``outbox``; written by the bare-INSERT baselines only.
BARE_DDL = [
    "CREATE TABLE outbox_bare (LIKE outbox INCLUDING ALL)",
    "CREATE SEQUENCE outbox_bare_id_seq OWNED BY outbox_bare.id",
    "ALTER TABLE outbox_bare ALTER COLUMN id SET DEFAULT nextval('outbox_bare_id_seq')",
]
BARE_INSERT_SQL = "INSERT INTO outbox_bare (event_id, type, body, headers) VALUES ($1, $2, $3, $4::jsonb)"
EFFECT_SQL = "INSERT INTO effects (consumer, event_id, n) VALUES ($1, $2, 0)"
EFFECT_N_SQL = "INSERT INTO effects (consumer, event_id, n) VALUES ($1, $2, $3)"
INBOX_SQL = (
    "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING event_id"
)


# ---------------------------------------------------------------------------------------------
# the payload: a real gateway envelope (a service-account subscribe push), ~650 bytes of JSON


def push(i: int) -> WeChatPushReceived:
    openid = f"oBench{i:024d}"
    return WeChatPushReceived(
        appid="wx1234567890abcdef",
        app_kind="oa",
        name="subscribe",
        openid=openid,
        create_time=1_732_240_000 + i,
        msg_id=None,
        dedup_key=f"wx1234567890abcdef:{openid}:{1_732_240_000 + i}:subscribe",
        push_id=i,
        payload={
            "ToUserName": "gh_0123456789ab",
            "FromUserName": openid,
            "CreateTime": str(1_732_240_000 + i),
            "MsgType": "event",
            "Event": "subscribe",
            "EventKey": "qrscene_spring",
        },
    )


def envelope(i: int) -> Envelope:
    return Envelope.wrap(push(i), producer=PRODUCER, event_type=EVENT_TYPE, correlation_id=secrets.token_hex(12))


def headers_for(env: Envelope) -> dict[str, Any]:
    return {
        "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        "correlation_id": env.correlation_id,
    }


def message(body: bytes, event_id: str, headers: dict[str, Any]) -> aio_pika.Message:
    """Exactly the properties :func:`shared.bus.outbox.amqp_message` sets."""
    return aio_pika.Message(
        body=body,
        message_id=event_id,
        type=EVENT_TYPE,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
        timestamp=datetime.now(UTC),
    )


class Payloads:
    """``n`` ready envelopes, built outside every timed section (each with its own event id)."""

    def __init__(self, n: int) -> None:
        envs = [envelope(i) for i in range(n)]
        self.ids = [str(e.event_id) for e in envs]
        self.uuids = [e.event_id for e in envs]
        self.bodies = [e.model_dump_json().encode() for e in envs]
        self.headers = [headers_for(e) for e in envs]
        self.headers_json = [json.dumps(h) for h in self.headers]

    def __len__(self) -> int:
        return len(self.bodies)


def split(n: int, rounds: int = ROUNDS) -> list[range]:
    """``range(n)`` cut into ``rounds`` consecutive slices."""
    bounds = [n * r // rounds for r in range(rounds + 1)]
    return [range(bounds[r], bounds[r + 1]) for r in range(rounds)]


# ---------------------------------------------------------------------------------------------
# environment


class Env:
    def __init__(self, settings: SiyuSettings) -> None:
        self.pg = settings.postgres_dsn.rstrip("/")
        self.amqp = settings.amqp_url
        self.dsn = f"{self.pg}/{DB_NAME}"
        self.tag = secrets.token_hex(3)
        self.topology = Topology(namespace=f"bench-{self.tag}.")
        self._db: Database | None = None
        self.connections: list[AbstractRobustConnection] = []

    @property
    def db(self) -> Database:
        """The database as a service has it (``shared.db.Database``: an asyncpg pool of POOL_SIZE)."""
        assert self._db is not None, "create_database() first"
        return self._db

    async def connect(self, role: str) -> AbstractRobustConnection:
        conn = await aio_pika.connect_robust(
            self.amqp, timeout=5, client_properties={"connection_name": f"siyu-bench-{self.tag}-{role}"}
        )
        self.connections.append(conn)
        return conn

    async def create_database(self) -> None:
        admin = await asyncpg.connect(f"{self.pg}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
        finally:
            await admin.close()
        # The schema from the tables the services' migrations create (SQLAlchemy only declares it).
        engine = create_async_engine(self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            for ddl in BARE_DDL:
                await conn.execute(text(ddl))
        await engine.dispose()
        self._db = await Database(self.dsn, producer=PRODUCER, max_size=POOL_SIZE, application_name="bench").open()

    async def sql(self, *queries: str) -> Any:
        """Run statements on a fresh connection; returns the first column of the last one's row."""
        conn = await asyncpg.connect(self.dsn)
        try:
            result = None
            for q in queries:
                result = await conn.fetchval(q)
            return result
        finally:
            await conn.close()

    async def teardown(self) -> None:
        errors = []
        for c in self.connections:
            with suppress(Exception):
                await c.close()
        try:
            conn = await aio_pika.connect_robust(self.amqp, timeout=5)
            try:
                channel = await conn.channel()
                await self.topology.delete_all(channel, CONSUMERS)
            finally:
                await conn.close()
        except Exception as exc:
            errors.append(f"broker clean-up: {exc!r}")
        if self._db is not None:
            await self._db.close()
        try:
            admin = await asyncpg.connect(f"{self.pg}/postgres")
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            finally:
                await admin.close()
        except Exception as exc:
            errors.append(f"database clean-up: {exc!r}")
        for e in errors:
            print(f"!! {e}")


async def queue_depth(conn: AbstractRobustConnection, name: str) -> int:
    channel = await conn.channel()
    try:
        q = await channel.declare_queue(name, passive=True)
        return int(q.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def purge(conn: AbstractRobustConnection, name: str) -> None:
    channel = await conn.channel()
    try:
        q = await channel.get_queue(name, ensure=True)
        await q.purge()
    finally:
        await channel.close()


async def publish_windowed(
    exchange: AbstractExchange,
    payloads: Payloads,
    routing_key: str,
    indexes: range,
    *,
    window: int = WINDOW,
    latencies: Latencies | None = None,
) -> int:
    """Publish ``payloads[indexes]`` with confirms, ``window`` at a time (``asyncio.gather`` per
    chunk, as the relay does with a batch); returns how many the broker returned unroutable."""
    returned = 0
    for start in range(indexes.start, indexes.stop, window):
        stop = min(indexes.stop, start + window)
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(
                exchange.publish(
                    message(payloads.bodies[i], payloads.ids[i], payloads.headers[i]),
                    routing_key=routing_key,
                    mandatory=True,
                    timeout=10,
                )
                for i in range(start, stop)
            )
        )
        if latencies is not None:
            latencies.add(time.perf_counter() - t0)
        returned += sum(isinstance(r, DeliveredMessage) for r in results)
    return returned


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(f"benchmark invariant broken: {what}")


# ---------------------------------------------------------------------------------------------
# 1 + 2: publishing — raw baselines and the outbox relay


class TimedRelay(OutboxRelay):
    """The real relay with clock reads at its phase boundaries (three per batch of 200)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phases: dict[str, list[float]] = {"claim": [], "publish": [], "mark+commit": []}
        self._started = self._claimed = self._marking = 0.0

    async def relay_once(self) -> int:
        self._started = time.perf_counter()
        claimed = await super().relay_once()
        if claimed:
            self.phases["mark+commit"].append(time.perf_counter() - self._marking)
        return claimed

    async def _publish_all(self, exchange: AbstractExchange, rows: list[Any]) -> tuple[_Outcomes, BaseException | None]:
        self._claimed = time.perf_counter()
        self.phases["claim"].append(self._claimed - self._started)
        return await super()._publish_all(exchange, rows)

    async def _mark(self, conn: asyncpg.Connection, outcomes: _Outcomes) -> None:
        self._marking = time.perf_counter()
        self.phases["publish"].append(self._marking - self._claimed)
        await super()._mark(conn, outcomes)


async def fill_outbox(db: Database, indexes: range) -> None:
    chunks = [range(s, min(indexes.stop, s + LOAD_TX)) for s in range(indexes.start, indexes.stop, LOAD_TX)]

    async def worker() -> None:
        while chunks:
            chunk = chunks.pop()
            async with db.unit_of_work() as uow:
                for i in chunk:
                    uow.publish(push(i), event_type=EVENT_TYPE)

    await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))


async def bench_publish(run: Run, env: Env) -> None:
    n = int(run.n * PUBLISH_SHARE)
    n_serial = max(ROUNDS, int(run.n * SERIAL_SHARE))
    payloads = Payloads(n)
    conn = await env.connect("publisher")
    setup = await conn.channel()
    sink = env.topology.queue(SINK)
    await env.topology.declare_consumer(setup, SINK, [EVENT_TYPE])
    channel = await conn.channel(publisher_confirms=True)
    exchange = await env.topology.declare_exchanges(channel)
    await publish_windowed(exchange, payloads, EVENT_TYPE, range(min(n, 400)))  # warm-up
    await purge(conn, sink)

    serial = run.new_case("raw publish, 1 in flight", group="publish", baseline=True, latency_of="publish+confirm")
    windowed = run.new_case(
        f"raw publish, {WINDOW} in flight", group="publish", baseline=True, latency_of=f"window of {WINDOW}"
    )
    relay_case = run.new_case(
        f"OutboxRelay drain, batch {RELAY_BATCH}",
        group="publish",
        unit="events/s",
        compare_to=[serial.name, windowed.name],
        latency_of=f"relay_once of {RELAY_BATCH}",
    )
    relay_conn = await env.connect("relay")
    relay = TimedRelay(env.db, relay_conn, env.topology, PRODUCER, batch_size=RELAY_BATCH)
    await relay._get_exchange()  # open the confirm channel outside the timing, as a running relay has
    relay.phases = {k: [] for k in relay.phases}
    fill_seconds = 0.0

    for serial_part, part in zip(split(n_serial), split(n), strict=True):
        returned = 0
        with serial.timed():
            for i in serial_part:
                t0 = time.perf_counter()
                r = await exchange.publish(
                    message(payloads.bodies[i], payloads.ids[i], payloads.headers[i]),
                    routing_key=EVENT_TYPE,
                    mandatory=True,
                    timeout=10,
                )
                serial.latencies.add(time.perf_counter() - t0)
                returned += isinstance(r, DeliveredMessage)
        serial.n += len(serial_part)
        check(returned == 0 and await queue_depth(conn, sink) == len(serial_part), "serial publish: all queued")
        await purge(conn, sink)

        with windowed.timed():
            returned = await publish_windowed(exchange, payloads, EVENT_TYPE, part, latencies=windowed.latencies)
        windowed.n += len(part)
        check(returned == 0 and await queue_depth(conn, sink) == len(part), "windowed publish: all queued")
        await purge(conn, sink)

        # Fill the outbox through units of work (LOAD_TX events each), outside the timing.
        t0 = time.perf_counter()
        await fill_outbox(env.db, part)
        fill_seconds += time.perf_counter() - t0
        await env.sql("ANALYZE outbox")  # as autovacuum would after a fill this size

        claimed_total = 0
        with relay_case.timed():
            while True:
                t0 = time.perf_counter()
                claimed = await relay.relay_once()
                if not claimed:
                    break
                relay_case.latencies.add(time.perf_counter() - t0)
                claimed_total += claimed
        relay_case.n += claimed_total
        pending = await env.sql("SELECT count(*) FROM outbox WHERE status <> 'sent'")
        check(claimed_total == len(part) and pending == 0, f"relay: claimed {claimed_total}, {pending} not sent")
        check(await queue_depth(conn, sink) == len(part), "relay: every event reached the queue")
        await purge(conn, sink)

    run.facts[f"outbox fill, UnitOfWork {LOAD_TX} events/tx x {LOAD_CONCURRENCY} in parallel (untimed set-up)"] = (
        f"{n / fill_seconds:,.0f} events/s"
    )
    lat = relay_case.latencies.values
    relay_case.extra["phase_p50_ms"] = {k: summarize_latencies(v).get("p50_ms") for k, v in relay.phases.items()}
    relay_case.extra["phase_share_of_time"] = {
        k: round(sum(v) / max(1e-9, sum(lat)), 3) for k, v in relay.phases.items()
    }
    claims = relay.phases["claim"]
    quarter = max(1, len(claims) // 4)
    # Would claiming slow down as sent rows (and dead index entries) pile up during a drain?
    relay_case.extra["claim_ms_mean_first_vs_last_quarter"] = [
        round(sum(claims[:quarter]) / quarter * 1000, 2),
        round(sum(claims[-quarter:]) / quarter * 1000, 2),
    ]
    for c in (serial, windowed, relay_case):
        run.record(c)
    await channel.close()
    await setup.queue_delete(sink)  # the consume group binds its own queues to the same type
    await setup.close()


# ---------------------------------------------------------------------------------------------
# 3: producing — one event per transaction


async def bench_produce(run: Run, env: Env) -> None:
    n = int(run.n * PRODUCE_SHARE)
    payloads = Payloads(n)
    db = env.db
    await env.sql("TRUNCATE outbox, outbox_bare")

    raw_case = run.new_case(
        "bare INSERT, asyncpg, 1 row/tx (autocommit)",
        group="produce",
        unit="tx/s",
        baseline=True,
        latency_of="transaction",
    )
    tx_case = run.new_case(
        "bare INSERT in BEGIN/COMMIT, asyncpg pool",
        group="produce",
        unit="tx/s",
        baseline=True,
        compare_to=[raw_case.name],
        latency_of="transaction",
        notes="pool.acquire, BEGIN, INSERT, COMMIT, release: the round trips of a unit of work",
    )
    uow_case = run.new_case(
        "UnitOfWork.publish, 1 event/tx",
        group="produce",
        unit="tx/s",
        compare_to=[raw_case.name, tx_case.name],
        latency_of="transaction",
    )
    write_case = run.new_case(
        "Outbox.write, 1 event, one autocommitted statement",
        group="produce",
        unit="tx/s",
        compare_to=[raw_case.name, uow_case.name],
        latency_of="transaction",
        notes="the hot-path form: a pooled connection and the one outbox statement (no BEGIN/COMMIT)",
    )

    raw = await asyncpg.connect(env.dsn)
    try:
        for part in split(n, PRODUCE_ROUNDS):
            with raw_case.timed():
                for i in part:
                    t0 = time.perf_counter()
                    await raw.execute(
                        BARE_INSERT_SQL, payloads.uuids[i], EVENT_TYPE, payloads.bodies[i], payloads.headers_json[i]
                    )
                    raw_case.latencies.add(time.perf_counter() - t0)
            raw_case.n += len(part)

            with tx_case.timed():
                for i in part:
                    t0 = time.perf_counter()
                    async with db.pool.acquire() as conn, conn.transaction():
                        await conn.execute(
                            BARE_INSERT_SQL, uuid.uuid4(), EVENT_TYPE, payloads.bodies[i], payloads.headers_json[i]
                        )
                    tx_case.latencies.add(time.perf_counter() - t0)
            tx_case.n += len(part)

            data = [push(i) for i in part]  # the caller has its data; the envelope is the outbox's work
            with uow_case.timed():
                for d in data:
                    t0 = time.perf_counter()
                    async with db.unit_of_work() as uow:
                        uow.publish(d, event_type=EVENT_TYPE)
                    uow_case.latencies.add(time.perf_counter() - t0)
            uow_case.n += len(part)

            with write_case.timed():
                for d in data:
                    t0 = time.perf_counter()
                    async with db.connection() as conn:
                        await db.outbox.write(conn, [db.outbox.prepare(d, event_type=EVENT_TYPE)])
                    write_case.latencies.add(time.perf_counter() - t0)
            write_case.n += len(part)
    finally:
        await raw.close()
    check(await env.sql("SELECT count(*) FROM outbox_bare") == 2 * n, "bare inserts: rows stored")
    check(await env.sql("SELECT count(*) FROM outbox WHERE status = 'pending'") == 2 * n, "outbox rows stored")
    run.facts["outbox row body bytes (avg)"] = await env.sql("SELECT avg(length(body))::int FROM outbox")
    for c in (raw_case, tx_case, uow_case, write_case):
        run.record(c)
    await env.sql("TRUNCATE outbox, outbox_bare")


# ---------------------------------------------------------------------------------------------
# 4: consuming — queue to committed effect


class CountingInboxConsumer(InboxConsumer[None]):
    """The real consumer; counts ``handle`` calls that returned (their transaction committed)."""

    def __init__(self, *args: Any, target: int, latencies: Latencies, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        self.committed = 0
        self.first_at: float | None = None
        self.done = asyncio.Event()
        self.latencies = latencies

    async def handle(self, body: bytes) -> str:
        t0 = time.perf_counter()
        if self.first_at is None:
            self.first_at = t0
        outcome = await super().handle(body)
        self.latencies.add(time.perf_counter() - t0)
        self.committed += 1
        if self.committed >= self.target:
            self.done.set()
        return outcome


async def record_effect(data: WeChatPushReceived, ctx: EventContext[Any]) -> None:
    """The handler under test: one row in ``effects``, in the inbox's transaction."""
    await ctx.uow.conn.execute(EFFECT_N_SQL, INBOX_C, ctx.envelope.event_id, data.push_id)


RawHandler = Callable[[AbstractIncomingMessage], Awaitable[None]]


@asynccontextmanager
async def raw_consumer(conn: AbstractRobustConnection, queue_name: str, on_message: RawHandler) -> AsyncIterator[None]:
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(queue_name, ensure=True)
    tag = await queue.consume(on_message)
    try:
        yield
    finally:
        await queue.cancel(tag)
        await channel.close()


class Progress:
    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.first_at: float | None = None
        self.done = asyncio.Event()

    def started(self) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()

    def one(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


async def wait_done(done: asyncio.Event, what: str, n: int) -> None:
    try:
        await asyncio.wait_for(done.wait(), timeout=max(60, n / 50))
    except TimeoutError:
        raise AssertionError(f"{what}: did not finish") from None


async def bench_consume(run: Run, env: Env) -> None:
    n = int(run.n * CONSUME_SHARE)
    payloads = Payloads(n)
    loader = await env.connect("loader")
    consumer_conn = await env.connect("consumer")
    # The raw consumers get a pool the size of the service's (asyncpg, as InboxConsumer's Database).
    pool = await asyncpg.create_pool(env.dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    assert pool is not None

    # Every consumer's queue as a service declares it (quorum), all bound to the event type: one
    # confirmed publish to the exchange pre-loads all four with the same messages.
    channel = await loader.channel(publisher_confirms=True)
    for name in (RAW_ACK, RAW_INSERT, RAW_INBOX, INBOX_C):
        await env.topology.declare_consumer(channel, name, [EVENT_TYPE])
    exchange = await env.topology.declare_exchanges(channel)

    ack_case = run.new_case(f"raw consumer, ack only, prefetch {PREFETCH}", group="consume", baseline=True)
    insert_case = run.new_case(
        "raw consumer + asyncpg INSERT effect", group="consume", baseline=True, compare_to=[ack_case.name]
    )
    inbox_sql_case = run.new_case(
        "raw consumer + asyncpg inbox+effect tx",
        group="consume",
        baseline=True,
        compare_to=[ack_case.name, insert_case.name],
    )
    inbox_case = run.new_case(
        "InboxConsumer, handler INSERTs effect",
        group="consume",
        compare_to=[ack_case.name, insert_case.name, inbox_sql_case.name],
        latency_of="handle() incl. commit",
    )

    async def drain(case: Case, consumer: str, on_message: Callable[[Progress], RawHandler], count: int) -> None:
        p = Progress(count)
        with case.timed():
            async with raw_consumer(consumer_conn, env.topology.queue(consumer), on_message(p)):
                await wait_done(p.done, case.name, count)
            case.timed_from = p.first_at
        case.n += count

    def ack_only(p: Progress) -> RawHandler:
        async def on_message(m: AbstractIncomingMessage) -> None:
            p.started()
            await m.ack()
            p.one()

        return on_message

    def insert_effect(p: Progress) -> RawHandler:
        async def on_message(m: AbstractIncomingMessage) -> None:
            p.started()
            await pool.execute(EFFECT_SQL, RAW_INSERT, uuid.UUID(m.message_id))
            p.one()
            await m.ack()

        return on_message

    def inbox_effect(p: Progress) -> RawHandler:
        async def on_message(m: AbstractIncomingMessage) -> None:
            p.started()
            event_id = uuid.UUID(m.message_id)
            async with pool.acquire() as db, db.transaction():
                if await db.fetchval(INBOX_SQL, RAW_INBOX, event_id, EVENT_TYPE) is not None:
                    await db.execute(EFFECT_SQL, RAW_INBOX, event_id)
            p.one()
            await m.ack()

        return on_message

    try:
        for part in split(n):
            check(await publish_windowed(exchange, payloads, EVENT_TYPE, part) == 0, "preload: routed")
            for name in (RAW_ACK, RAW_INSERT, RAW_INBOX, INBOX_C):
                depth = await queue_depth(loader, env.topology.queue(name))
                check(depth == len(part), f"preload: {depth} messages in {name}, expected {len(part)}")

            await drain(ack_case, RAW_ACK, ack_only, len(part))
            await drain(insert_case, RAW_INSERT, insert_effect, len(part))
            await drain(inbox_sql_case, RAW_INBOX, inbox_effect, len(part))

            consumer = CountingInboxConsumer(
                INBOX_C,
                env.db,
                consumer_conn,
                env.topology,
                {EVENT_TYPE: record_effect},
                None,
                prefetch=PREFETCH,
                target=len(part),
                latencies=inbox_case.latencies,
            )
            with inbox_case.timed():
                await consumer.start()
                try:
                    await wait_done(consumer.done, inbox_case.name, len(part))
                finally:
                    await consumer.stop()
                inbox_case.timed_from = consumer.first_at
            inbox_case.n += len(part)
    finally:
        await pool.close()
        await channel.close()

    for name in (RAW_INSERT, RAW_INBOX, INBOX_C):
        effects = await env.sql(f"SELECT count(*) FROM effects WHERE consumer = '{name}'")
        check(effects == n, f"{name}: {effects} effects for {n} messages")
    inbox_rows = await env.sql(f"SELECT count(*) FROM inbox WHERE consumer = '{INBOX_C}'")
    check(inbox_rows == n, f"InboxConsumer: {inbox_rows} inbox rows for {n} messages")
    await asyncio.sleep(0.3)  # acks follow the commit; let the last ones reach the broker
    left = {
        name: await queue_depth(loader, env.topology.queue(name)) for name in (RAW_ACK, RAW_INSERT, RAW_INBOX, INBOX_C)
    }
    check(not any(left.values()), f"messages left unacknowledged: {left}")
    for c in (ack_case, insert_case, inbox_sql_case, inbox_case):
        run.record(c)


# ---------------------------------------------------------------------------------------------


@register(
    "backbone",
    n=20_000,
    quick_n=3_000,
    description="outbox relay, UnitOfWork/Outbox writes, InboxConsumer vs raw aio-pika/asyncpg (real broker and DB)",
)
async def bench(run: Run) -> None:
    configure_logging("bench", "WARNING")
    env = Env(load_settings(SiyuSettings))
    run.facts["loop"] = type(asyncio.get_running_loop()).__module__.split(".")[0]
    run.facts["namespace"] = env.topology.namespace
    run.facts["rounds (baseline/measured alternations)"] = {
        "publish": ROUNDS,
        "produce": PRODUCE_ROUNDS,
        "consume": ROUNDS,
    }
    run.facts["envelope bytes (avg)"] = sum(map(len, Payloads(100).bodies)) // 100
    try:
        await env.create_database()
        run.facts["postgres"] = await env.sql("SHOW server_version")
        run.facts["postgres synchronous_commit"] = await env.sql("SHOW synchronous_commit")
        probe = await env.connect("probe")
        version = probe.transport.connection.server_properties.get("version") if probe.transport else None
        run.facts["rabbitmq"] = version.decode() if isinstance(version, bytes) else str(version)
        await bench_publish(run, env)
        await bench_produce(run, env)
        await bench_consume(run, env)
    finally:
        await env.teardown()
