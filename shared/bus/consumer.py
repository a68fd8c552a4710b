"""Inbox consumer: the one way to consume.

For each message: parse the envelope, then in ONE transaction record ``(consumer, event_id)`` in
the inbox and run the handler. A duplicate finds its inbox row and is acknowledged without effect.
The message is acknowledged only after the transaction committed, or after it was durably handed
to a retry or dead-letter queue (publisher confirm): nothing is acknowledged that was not stored.

A handler that raises is retried through the delay queues with growing backoff, then
dead-lettered. A message that cannot be parsed, or has no handler, is dead-lettered at once:
retrying it cannot help.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.outbox import Outbox
from shared.bus.topology import Topology
from shared.events import EventData, data_model
from shared.events.envelope import Envelope
from shared.observability import continue_trace, get_logger, traceparent_var

log = get_logger(__name__)

CONSUMED = Counter("siyu_events_consumed_total", "Events handled", ["consumer", "type", "outcome"])
HANDLE_SECONDS = Histogram("siyu_event_handle_seconds", "Handler time", ["consumer", "type"])

D = TypeVar("D")


@dataclass
class EventContext(Generic[D]):
    """What a handler gets besides the event: the unit of work, the outbox and its service's deps."""

    session: AsyncSession
    envelope: Envelope
    outbox: Outbox
    deps: D
    # What a Prefetching handler's ``fetch`` returned, fetched before the transaction opened.
    prefetched: Any = None

    async def publish(self, data: EventData, *, event_type: str | None = None) -> Envelope:
        """Publish a follow-up event in the same transaction, caused by the one being handled."""
        return await self.outbox.add(
            self.session,
            data,
            event_type=event_type,
            correlation_id=self.envelope.correlation_id or str(self.envelope.event_id),
            causation_id=str(self.envelope.event_id),
        )


Handler = Callable[[Any, EventContext[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Prefetching:
    """A handler that needs a slow outside read (a WeChat API call) before it writes.

    ``fetch(data, deps)`` runs before the unit of work opens, so no database connection is held
    while WeChat answers (up to its timeouts and retries); it is skipped for an event already in
    the inbox. ``apply(data, ctx)`` then runs in the inbox transaction with ``ctx.prefetched``.
    ``fetch`` must only read: a duplicate delivered concurrently may fetch twice.
    """

    fetch: Callable[[Any, Any], Awaitable[Any]]
    apply: Handler

    async def __call__(self, data: Any, ctx: EventContext[Any]) -> None:
        await self.apply(data, ctx)


class PoisonMessage(Exception):
    """The message can never be handled: dead-letter it without retrying."""


def _attempt(headers: Mapping[str, Any]) -> int:
    """The ``x-siyu-attempt`` header, 1 when absent or garbled: it must never stop a message being handled."""
    value: Any = headers.get("x-siyu-attempt")
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


class InboxConsumer:
    def __init__(
        self,
        consumer: str,
        sessions: async_sessionmaker[AsyncSession],
        inbox: Table,
        outbox: Outbox,
        connection: AbstractRobustConnection,
        topology: Topology,
        handlers: Mapping[str, Handler],
        deps: Any = None,
        *,
        prefetch: int = 32,
    ) -> None:
        self.consumer = consumer
        self.sessions = sessions
        self.inbox = inbox
        self.outbox = outbox
        self.connection = connection
        self.topology = topology
        self.handlers = dict(handlers)
        self.deps = deps
        self.prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._publish_channel: AbstractChannel | None = None
        self._consumer_tag: str | None = None

    async def start(self) -> None:
        self._channel = await self.connection.channel()
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._publish_channel = await self.connection.channel(publisher_confirms=True)
        queue = await self.topology.declare_consumer(self._channel, self.consumer, self.handlers)
        self._consumer_tag = await queue.consume(self._on_message)
        log.info("consumer.started", consumer=self.consumer, queue=queue.name, types=sorted(self.handlers))

    async def stop(self) -> None:
        for ch in (self._channel, self._publish_channel):
            if ch is not None and not ch.is_closed:
                await ch.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        structlog.contextvars.bind_contextvars(event_id=message.message_id, event_type=message.type)
        headers = message.headers or {}
        tp = headers.get("traceparent")
        continue_trace(tp if isinstance(tp, str) else None)
        attempt = _attempt(headers)
        started = time.perf_counter()
        event_type = message.type or "?"
        try:
            outcome = await self.handle(message.body)
        except PoisonMessage as exc:
            await self._dead_letter(message, f"poison: {exc}")
            outcome = "poison"
        except Exception as exc:
            outcome = "failed"
            if attempt >= self.topology.max_attempts:
                log.error("event.dead_lettered", attempt=attempt, error=repr(exc))
                await self._dead_letter(message, repr(exc))
            else:
                retry_queue, delay = self.topology.retry_queue(self.consumer, attempt)
                log.warning("event.retry", attempt=attempt, delay_ms=delay, error=repr(exc))
                await self._republish(message, "", retry_queue, attempt + 1, repr(exc))
        else:
            await message.ack()
        finally:
            CONSUMED.labels(self.consumer, event_type, locals().get("outcome", "crashed")).inc()
            HANDLE_SECONDS.labels(self.consumer, event_type).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("event_id", "event_type", "trace_id")
            traceparent_var.set(None)

    async def handle(self, body: bytes) -> str:
        """Handle one message body: ``"handled"`` or ``"duplicate"``; raises on failure."""
        try:
            envelope = Envelope.model_validate_json(body)
        except ValidationError as exc:
            raise PoisonMessage(f"not a valid envelope: {exc.errors()[0]['msg']}") from None
        handler = self.handlers.get(envelope.type)
        model = data_model(envelope.type)
        if handler is None or model is None:
            raise PoisonMessage(f"no handler for {envelope.type}")
        try:
            data = model.model_validate(envelope.data)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid data for {envelope.type}: {exc.errors()[0]}") from None
        prefetched = None
        if isinstance(handler, Prefetching):
            if await self._seen(envelope.event_id):
                log.info("event.duplicate")
                return "duplicate"
            prefetched = await handler.fetch(data, self.deps)
        async with self.sessions() as session, session.begin():
            fresh = await session.scalar(
                pg_insert(self.inbox)
                .values(consumer=self.consumer, event_id=envelope.event_id, event_type=envelope.type)
                .on_conflict_do_nothing()
                .returning(self.inbox.c.event_id)
            )
            if fresh is None:
                log.info("event.duplicate")
                return "duplicate"
            await handler(data, EventContext(session, envelope, self.outbox, self.deps, prefetched))
        return "handled"

    async def _seen(self, event_id: Any) -> bool:
        async with self.sessions() as session:
            found = await session.scalar(
                select(self.inbox.c.event_id).where(
                    self.inbox.c.consumer == self.consumer, self.inbox.c.event_id == event_id
                )
            )
        return found is not None

    async def _republish(
        self, message: AbstractIncomingMessage, exchange: str, routing_key: str, attempt: int, error: str
    ) -> None:
        """Hand the message to a retry or dead-letter queue, confirmed, then ack the original."""
        assert self._publish_channel is not None
        headers = dict(message.headers or {})
        headers.update({"x-siyu-attempt": attempt, "x-siyu-error": error[:1000], "x-siyu-queue": self.consumer})
        copy = aio_pika.Message(
            body=message.body,
            message_id=message.message_id,
            type=message.type,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            timestamp=message.timestamp,
        )
        ex = (
            self._publish_channel.default_exchange
            if exchange == ""
            else await self._publish_channel.get_exchange(exchange, ensure=False)
        )
        try:
            result = await ex.publish(copy, routing_key=routing_key, mandatory=True, timeout=10)
            if isinstance(result, DeliveredMessage):
                raise RuntimeError(f"could not route to {routing_key}; is the topology declared?")
        except Exception as exc:
            # Not stored anywhere: give the original back to the broker (it counts towards the
            # queue's delivery limit, which dead-letters it in the end) instead of holding it.
            log.error("event.handoff_failed", routing_key=routing_key, error=repr(exc))
            with contextlib.suppress(Exception):  # a closed channel returns it to the broker anyway
                await message.nack(requeue=True)
            return
        await message.ack()

    async def _dead_letter(self, message: AbstractIncomingMessage, error: str) -> None:
        attempt = _attempt(message.headers or {})
        await self._republish(
            message, self.topology.dead_letter_exchange, self.topology.queue(self.consumer), attempt, error
        )
