"""Transactional outbox and its relay.

An event is written to the producer's ``outbox`` table in the same transaction as the change that
caused it, so it exists exactly when the change does. :class:`OutboxRelay` then moves rows to
RabbitMQ: it claims a batch with ``FOR UPDATE SKIP LOCKED`` (so several relays never claim the
same row), publishes each with publisher confirms and ``mandatory``, and marks the confirmed ones
sent in the same transaction that holds the claim. A relay that dies between publish and commit
leaves the rows pending and they are published again: delivery is at-least-once and every
consumer's inbox absorbs the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from prometheus_client import Counter, Gauge
from sqlalchemy import Table, insert, literal_column, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.topology import Topology
from shared.events.envelope import Envelope, EventData
from shared.observability import get_logger, outgoing_traceparent, request_id_var

log = get_logger(__name__)

OUTBOX_PUBLISHED = Counter("siyu_outbox_published_total", "Events the relay published", ["producer"])
OUTBOX_FAILED = Counter("siyu_outbox_publish_failures_total", "Failed publish attempts", ["producer"])
OUTBOX_UNROUTABLE = Counter(
    "siyu_outbox_unroutable_total", "Events no queue was bound for (returned by mandatory)", ["producer"]
)
OUTBOX_BACKLOG = Gauge("siyu_outbox_backlog", "Pending outbox rows seen by the relay", ["producer"])

NOTIFY_CHANNEL = "siyu_outbox"


class Outbox:
    """The one way to publish: ``await outbox.add(session, data)`` inside the unit of work."""

    def __init__(self, table: Table, producer: str) -> None:
        self.table = table
        self.producer = producer

    async def add(
        self,
        session: AsyncSession,
        data: EventData,
        *,
        event_type: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Envelope:
        envelope = Envelope.wrap(
            data,
            producer=self.producer,
            event_type=event_type,
            correlation_id=correlation_id or request_id_var.get(),
            causation_id=causation_id,
        )
        headers = {"traceparent": outgoing_traceparent()}
        if envelope.correlation_id:
            headers["correlation_id"] = envelope.correlation_id
        await session.execute(
            insert(self.table).values(
                event_id=envelope.event_id,
                type=envelope.type,
                body=envelope.model_dump_json().encode(),
                headers=headers,
            )
        )
        # Delivered at commit only: wakes the relay without polling. Once per transaction is enough.
        transaction = session.get_transaction()
        if session.info.get("outbox_notified") is not transaction:
            await session.execute(text("SELECT pg_notify(:ch, '')"), {"ch": NOTIFY_CHANNEL})
            session.info["outbox_notified"] = transaction
        return envelope


def amqp_message(event_id: Any, event_type: str, body: bytes, headers: dict[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        body=body,
        message_id=str(event_id),
        type=event_type,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
        timestamp=datetime.now(UTC),
    )


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        connection: AbstractRobustConnection,
        topology: Topology,
        producer: str,
        *,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        max_backoff: float = 60.0,
        linger: float = 0.02,
        listen_dsn: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.table = table
        self.connection = connection
        self.topology = topology
        self.producer = producer
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.linger = linger
        self.listen_dsn = listen_dsn
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    async def _get_exchange(self) -> AbstractExchange:
        if self._channel is None or self._channel.is_closed or self._exchange is None:
            self._channel = await self.connection.channel(publisher_confirms=True)
            self._exchange = await self.topology.declare_exchanges(self._channel)
        return self._exchange

    async def _publish(self, exchange: AbstractExchange, row: Any) -> bool:
        """Publish with confirm; False when the broker returned it as unroutable (``mandatory``)."""
        message = amqp_message(row.event_id, row.type, row.body, dict(row.headers or {}))
        result = await exchange.publish(message, routing_key=row.type, mandatory=True, timeout=10)
        return not isinstance(result, DeliveredMessage)

    async def _mark(self, session: AsyncSession, outcomes: dict[str, list[Any]]) -> None:
        """Record the batch's outcome. Overridable only to simulate a crash in tests."""
        t = self.table
        if outcomes["sent"]:
            await session.execute(
                update(t).where(t.c.id.in_(outcomes["sent"])).values(status="sent", sent_at=datetime.now(UTC))
            )
        if outcomes["unroutable"]:
            await session.execute(
                update(t)
                .where(t.c.id.in_(outcomes["unroutable"]))
                .values(status="unroutable", sent_at=datetime.now(UTC), last_error="no queue bound")
            )
        for row, error in outcomes["failed"]:
            delay = min(self.max_backoff, 0.5 * 2 ** min(row.attempts, 10)) * (0.5 + random.random())
            await session.execute(
                update(t)
                .where(t.c.id == row.id)
                .values(
                    attempts=t.c.attempts + 1,
                    available_at=datetime.now(UTC) + timedelta(seconds=delay),
                    last_error=error[:500],
                )
            )

    async def relay_once(self) -> int:
        """Claim, publish and mark one batch. Returns how many rows were claimed."""
        t = self.table
        async with self.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(t.c.id, t.c.event_id, t.c.type, t.c.body, t.c.headers, t.c.attempts)
                    # A literal, not a parameter, so the partial index on pending rows always applies.
                    .where(t.c.status == literal_column("'pending'"), t.c.available_at <= datetime.now(UTC))
                    .order_by(t.c.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            outcomes: dict[str, list[Any]] = {"sent": [], "unroutable": [], "failed": []}
            try:
                exchange = await self._get_exchange()
            except Exception as exc:  # broker down: back off every row, keep them pending
                outcomes["failed"] = [(r, f"broker: {exc!r}") for r in rows]
            else:
                # Windowed publishing: the whole batch is in flight at once, confirms awaited together.
                results = await asyncio.gather(*(self._publish(exchange, r) for r in rows), return_exceptions=True)
                for row, result in zip(rows, results, strict=True):
                    if result is True:
                        outcomes["sent"].append(row.id)
                    elif result is False:
                        outcomes["unroutable"].append(row.id)
                        # Normal for events nobody subscribes to yet; counted, not logged as a warning.
                        log.debug("outbox.unroutable", event_type=row.type, event_id=str(row.event_id))
                    else:
                        outcomes["failed"].append((row, repr(result)))
            await self._mark(session, outcomes)
        OUTBOX_PUBLISHED.labels(self.producer).inc(len(outcomes["sent"]))
        OUTBOX_UNROUTABLE.labels(self.producer).inc(len(outcomes["unroutable"]))
        if outcomes["failed"]:
            OUTBOX_FAILED.labels(self.producer).inc(len(outcomes["failed"]))
            log.warning("outbox.publish_failed", count=len(outcomes["failed"]), error=outcomes["failed"][0][1])
            if self._channel is not None and not self._channel.is_closed:
                with contextlib.suppress(Exception):
                    await self._channel.close()
            self._channel = None
        return len(rows)

    async def backlog(self) -> int:
        async with self.sessions() as session:
            n = await session.scalar(
                select(text("count(*)")).select_from(self.table).where(self.table.c.status == "pending")
            )
        return int(n or 0)

    async def _listen(self) -> None:
        """Wake on NOTIFY from committing producers; polling covers a lost listener."""
        if not self.listen_dsn:
            return
        while not self._stopping.is_set():
            try:
                conn = await asyncpg.connect(self.listen_dsn)
                try:
                    await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
                    await self._stopping.wait()
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("outbox.listen_failed", error=repr(exc))
                await asyncio.sleep(self.poll_interval)

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        log.info("outbox.relay_started", producer=self.producer)
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    claimed = await self.relay_once()
                except Exception as exc:
                    log.error("outbox.relay_error", error=repr(exc))
                    claimed = 0
                    await asyncio.sleep(self.poll_interval)
                if claimed >= self.batch_size:
                    continue  # more waiting: no sleep
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
                except TimeoutError:
                    continue
                if self.linger and not self._stopping.is_set():
                    # Commits wake us one at a time; a short pause lets the ones arriving together
                    # share one claim and one round of confirms (a batch of 1 costs nearly as much).
                    await asyncio.sleep(self.linger)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
