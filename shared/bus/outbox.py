"""The transactional outbox: how an event leaves a service.

An event is written to the producer's ``outbox`` table in the same transaction as the change that
caused it, so it exists exactly when the change does. The relay (``shared.bus.relay``, its own
process) then moves the rows to RabbitMQ.

:class:`Outbox` is the one place an event becomes a row: it wraps the data in its envelope (ids,
correlation and causation, trace context) and writes any number of rows in ONE statement that also
wakes the relay (``pg_notify``, delivered at commit). :class:`shared.uow.UnitOfWork` calls it at
commit for the events published in it; a hot path whose whole write is one statement (the gateway's
push store) puts :meth:`Outbox.columns` into its own statement instead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.events.envelope import Envelope, EventData
from shared.observability import outgoing_traceparent, request_id_var

NOTIFY_CHANNEL = "siyu_outbox"

# How often one producer wakes the relay at most. A transaction that ran NOTIFY takes a lock that is
# global to the server through its commit (WAL flush included), so a NOTIFY per transaction
# serialises every producer's commits (measured: 938 plain INSERT transactions/s against 481/s with a
# notify, 8 writers). The relay keeps polling for a while after each wake (``OutboxRelay.active_window``,
# longer than this interval), so a commit that skipped its notify is still picked up at once.
WAKE_INTERVAL = 0.02

# unnest() turns the four arrays into rows: one statement however many events, and pg_notify rides
# along when due (a data-modifying CTE always runs, referenced or not).
_WRITE = """
INSERT INTO outbox (event_id, type, body, headers)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::jsonb[])
"""
_WRITE_AND_WAKE = f"""
WITH written AS ({_WRITE})
SELECT pg_notify('{NOTIFY_CHANNEL}', '')
"""


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An envelope ready to be stored: its serialised body and AMQP headers."""

    envelope: Envelope
    body: bytes
    headers: dict[str, str]

    @property
    def event_id(self) -> uuid.UUID:
        return self.envelope.event_id

    @property
    def type(self) -> str:
        return self.envelope.type


class Outbox:
    """A producer's outbox. ``prepare`` makes the envelope; ``write`` stores a batch of them."""

    def __init__(self, producer: str, *, wake_interval: float = WAKE_INTERVAL) -> None:
        self.producer = producer
        self.wake_interval = wake_interval
        self._last_wake = -wake_interval

    def wake_due(self) -> bool:
        """Whether this write should wake the relay (at most once per ``wake_interval`` per producer).

        A statement that writes outbox rows itself (the gateway's push store) asks this too and
        runs ``pg_notify`` only when it answers True.
        """
        now = time.monotonic()
        if now - self._last_wake < self.wake_interval:
            return False
        self._last_wake = now
        return True

    def prepare(
        self,
        data: EventData,
        *,
        event_type: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> OutgoingEvent:
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
        return OutgoingEvent(envelope, envelope.model_dump_json().encode(), headers)

    @staticmethod
    def columns(events: Sequence[OutgoingEvent]) -> tuple[list[uuid.UUID], list[str], list[bytes], list[Any]]:
        """The outbox columns as four parallel arrays, for a statement that inserts them with unnest."""
        return (
            [e.event_id for e in events],
            [e.type for e in events],
            [e.body for e in events],
            [e.headers for e in events],
        )

    async def write(self, conn: asyncpg.Connection, events: Sequence[OutgoingEvent]) -> None:
        """Store ``events`` in the caller's transaction (one round trip); wake the relay at commit when due."""
        if events:
            await conn.execute(_WRITE_AND_WAKE if self.wake_due() else _WRITE, *self.columns(events))
