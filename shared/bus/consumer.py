"""Inbox consumer: the one way to consume.

For each message: parse the envelope, then in ONE unit of work record ``(consumer, event_id)`` in
the inbox and run the handler; the events the handler publishes are caused by this one and are
written in the same transaction. A duplicate finds its inbox row and is acknowledged without
effect. The message is acknowledged only after the transaction committed, or after it was durably
handed to a retry or dead-letter queue (publisher confirm): nothing is acknowledged that was not
stored.

Failures are of two kinds, and only one of them is the event's fault:

* **transient** (``shared.db.is_transient``: the database unreachable, the pool exhausted, a
  serialization conflict, an upstream timeout): the consumer keeps the message, stops taking new
  ones (``/ready`` says why) and tries the same message again with backoff until the dependency is
  back, then resumes. The event's retry budget is not touched, so an outage never dead-letters
  anything. A message held longer than ``max_hold`` is returned to the queue (RabbitMQ's consumer
  timeout would take it back anyway).
* **deterministic** (the handler raised anything else): retried through the delay queues with
  growing backoff (``x-siyu-attempt``), then dead-lettered. A message that cannot be parsed, or has
  no handler, is dead-lettered at once: retrying it cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from shared.bus.topology import Topology
from shared.db import Database, is_transient
from shared.events import EventData, data_model
from shared.events.envelope import Envelope
from shared.observability import continue_trace, get_logger, traceparent_var
from shared.uow import UnitOfWork

log = get_logger(__name__)

CONSUMED = Counter("siyu_events_consumed_total", "Events handled", ["consumer", "type", "outcome"])
HANDLE_SECONDS = Histogram("siyu_event_handle_seconds", "Handler time", ["consumer", "type"])
PAUSED = Gauge("siyu_consumer_paused", "1 while the consumer is paused by a transient failure", ["consumer"])
TRANSIENT = Counter("siyu_consumer_transient_failures_total", "Transient failures (held, not retried)", ["consumer"])

D = TypeVar("D")

_INBOX_INSERT = """
INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING true
"""
_INBOX_SEEN = "SELECT true FROM inbox WHERE consumer = $1 AND event_id = $2"


@dataclass
class EventContext(Generic[D]):
    """What a handler gets besides the event: its unit of work, the envelope and its service's deps."""

    uow: UnitOfWork
    envelope: Envelope
    deps: D
    # What a Prefetching handler's ``fetch`` returned, fetched before the transaction opened.
    prefetched: Any = None


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


class InboxConsumer(Generic[D]):
    def __init__(
        self,
        consumer: str,
        db: Database,
        connection: AbstractRobustConnection,
        topology: Topology,
        handlers: Mapping[str, Handler],
        deps: D,
        *,
        prefetch: int = 16,
        max_hold: float = 600.0,
        max_backoff: float = 10.0,
    ) -> None:
        self.consumer = consumer
        self.db = db
        self.connection = connection
        self.topology = topology
        self.handlers = dict(handlers)
        self.deps = deps
        self.prefetch = prefetch
        self.max_hold = max_hold
        self.max_backoff = max_backoff
        self._channel: AbstractChannel | None = None
        self._publish_channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._pause_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.paused_reason: str | None = None
        self.paused_since: datetime | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._channel = await self.connection.channel()
        self._publish_channel = await self.connection.channel(publisher_confirms=True)
        self._queue = await self.topology.declare_consumer(self._channel, self.consumer, self.handlers)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consumer.started", consumer=self.consumer, queue=self._queue.name, types=sorted(self.handlers))

    async def stop(self) -> None:
        self._stopping.set()
        for ch in (self._channel, self._publish_channel):
            if ch is not None and not ch.is_closed:
                with contextlib.suppress(Exception):
                    await ch.close()

    @property
    def status(self) -> str | None:
        """Why the consumer is not taking events, or None while it is."""
        if self.paused_reason is None:
            return None
        since = self.paused_since.isoformat() if self.paused_since else "?"
        return f"paused since {since}: {self.paused_reason}"

    async def _pause(self, exc: BaseException) -> None:
        async with self._pause_lock:
            self.paused_reason = f"a dependency is unavailable ({exc.__class__.__name__}: {str(exc)[:200]})"
            if self.paused_since is not None:
                return
            self.paused_since = datetime.now(UTC)
            PAUSED.labels(self.consumer).set(1)
            log.warning("consumer.paused", consumer=self.consumer, reason=self.paused_reason)
            if self._queue is not None and self._consumer_tag is not None:
                with contextlib.suppress(Exception):
                    # Stop new deliveries; the ones we hold stay ours (unacknowledged) until handled.
                    await self._queue.cancel(self._consumer_tag)
                self._consumer_tag = None

    async def _resume(self) -> None:
        if self.paused_since is None:
            return
        async with self._pause_lock:
            if self.paused_since is None:
                return
            log.info("consumer.resumed", consumer=self.consumer, paused_since=self.paused_since.isoformat())
            self.paused_reason = None
            self.paused_since = None
            PAUSED.labels(self.consumer).set(0)
            if self._queue is not None and self._consumer_tag is None and not self._stopping.is_set():
                self._consumer_tag = await self._queue.consume(self._on_message)

    # --- one message ------------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        structlog.contextvars.bind_contextvars(event_id=message.message_id, event_type=message.type)
        headers = message.headers or {}
        tp = headers.get("traceparent")
        continue_trace(tp if isinstance(tp, str) else None)
        started = time.perf_counter()
        event_type = message.type or "?"
        outcome = "crashed"
        try:
            outcome = await self._settle(message, _attempt(headers))
        finally:
            CONSUMED.labels(self.consumer, event_type, outcome).inc()
            HANDLE_SECONDS.labels(self.consumer, event_type).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("event_id", "event_type", "trace_id")
            traceparent_var.set(None)

    async def _settle(self, message: AbstractIncomingMessage, attempt: int) -> str:
        """Handle, hold through transient failures, and ack, retry or dead-letter. The outcome."""
        held_since = time.monotonic()
        failures = 0
        while True:
            try:
                outcome = await self.handle(message.body)
            except PoisonMessage as exc:
                await self._dead_letter(message, f"poison: {exc}")
                outcome = "poison"
            except Exception as exc:
                if is_transient(exc):
                    TRANSIENT.labels(self.consumer).inc()
                    failures += 1
                    if not self._stopping.is_set() and time.monotonic() - held_since <= self.max_hold:
                        await self._pause(exc)
                        delay = min(self.max_backoff, 0.2 * 2 ** min(failures, 10)) * (0.5 + random.random())
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                        continue
                    # Give it back: the broker redelivers it (counted toward the delivery limit,
                    # which is far above what an outage that long costs).
                    log.warning("event.returned", error=repr(exc), held_seconds=round(time.monotonic() - held_since))
                    with contextlib.suppress(Exception):
                        await message.nack(requeue=True)
                    outcome = "returned"
                else:
                    await self._retry_or_dead_letter(message, attempt, exc)
                    outcome = "failed"
            else:
                await self._ack(message)
            # Whatever became of this message, it is no longer held: take deliveries again. After a
            # failure of its own the dependency evidently answered; after a return, the next
            # delivery tests the dependency again (and pauses again if it is still away). Without
            # this a consumer paused by an outage stayed paused whenever its held messages ended
            # any other way than handled.
            await self._resume()
            return outcome

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
            data: EventData = model.model_validate(envelope.data)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid data for {envelope.type}: {exc.errors()[0]}") from None
        prefetched = None
        if isinstance(handler, Prefetching):
            if await self._seen(envelope):
                log.info("event.duplicate")
                return "duplicate"
            prefetched = await handler.fetch(data, self.deps)
        async with self.db.unit_of_work(
            correlation_id=envelope.correlation_id or str(envelope.event_id), causation_id=str(envelope.event_id)
        ) as uow:
            fresh = await uow.conn.fetchval(_INBOX_INSERT, self.consumer, envelope.event_id, envelope.type)
            if fresh is None:
                log.info("event.duplicate")
                return "duplicate"
            await handler(data, EventContext(uow, envelope, self.deps, prefetched))
        return "handled"

    async def _seen(self, envelope: Envelope) -> bool:
        async with self.db.connection() as conn:
            return bool(await conn.fetchval(_INBOX_SEEN, self.consumer, envelope.event_id))

    # --- acknowledging and handing off ----------------------------------------------------------------

    async def _ack(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.ack()
        except Exception as exc:  # channel gone: the broker redelivers, and the inbox absorbs it
            log.warning("event.ack_failed", error=repr(exc))

    async def _retry_or_dead_letter(self, message: AbstractIncomingMessage, attempt: int, exc: Exception) -> None:
        if attempt >= self.topology.max_attempts:
            log.error("event.dead_lettered", attempt=attempt, error=repr(exc))
            await self._dead_letter(message, repr(exc))
            return
        retry_queue, delay = self.topology.retry_queue(self.consumer, attempt)
        log.warning("event.retry", attempt=attempt, delay_ms=delay, error=repr(exc))
        await self._republish(message, "", retry_queue, attempt + 1, repr(exc))

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
        try:
            ex = (
                self._publish_channel.default_exchange
                if exchange == ""
                else await self._publish_channel.get_exchange(exchange, ensure=False)
            )
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
        await self._ack(message)

    async def _dead_letter(self, message: AbstractIncomingMessage, error: str) -> None:
        attempt = _attempt(message.headers or {})
        await self._republish(
            message, self.topology.dead_letter_exchange, self.topology.queue(self.consumer), attempt, error
        )
