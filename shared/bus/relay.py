"""The outbox relay: moves committed outbox rows to RabbitMQ, in batches, in its own process.

It claims a batch with ``FOR UPDATE SKIP LOCKED`` (several relays never claim the same row),
publishes the whole batch at once with publisher confirms and ``mandatory``, and records every
row's outcome in ONE statement in the transaction that holds the claim. A relay that dies between
publish and commit leaves the rows pending and they are published again: delivery is
at-least-once and every consumer's inbox absorbs the repeat.

Outcomes:

* confirmed → ``sent``;
* returned as unroutable (no queue bound) → ``unroutable`` when no service consumes that type (it
  is normal for events nobody listens to yet), but a FAILURE when a consumer's manifest names the
  type: its queue is missing or unbound, and dropping the event would lose it;
* failed → retried with exponential backoff, on the database's clock (replicas with skewed clocks
  agree); after ``max_attempts`` the row is ``parked``: it stays, is counted in
  ``siyu_outbox_parked`` and listed by ``siyuctl outbox parked``, and ``siyuctl outbox retry``
  re-queues it;
* broker unreachable (no channel, connection lost mid-batch, confirm timed out) → not the row's
  failure: the rows stay pending with their attempts untouched and the relay backs off, so a broker
  outage of any length parks nothing.

Running in its own process keeps publishing from competing with request handling for the
service's event loop and CPU (``services/relay.py`` runs one relay per service database).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from prometheus_client import Counter, Gauge

from shared.bus.outbox import NOTIFY_CHANNEL, WAKE_INTERVAL
from shared.bus.topology import Topology, amqp_message
from shared.db import Database, is_transient
from shared.observability import get_logger

log = get_logger(__name__)

PUBLISHED = Counter("siyu_outbox_published_total", "Events the relay published", ["producer"])
FAILED = Counter("siyu_outbox_publish_failures_total", "Failed publish attempts", ["producer", "reason"])
UNROUTABLE = Counter("siyu_outbox_unroutable_total", "Events no service consumes (returned by mandatory)", ["producer"])
BACKLOG = Gauge("siyu_outbox_backlog", "Pending outbox rows", ["producer"])
PARKED = Gauge("siyu_outbox_parked", "Outbox rows parked after too many failed attempts", ["producer"])

# The partial index on pending rows serves this; the status literal (not a parameter) keeps it usable.
_CLAIM = """
SELECT id, event_id, type, body, headers, attempts
FROM outbox
WHERE status = 'pending' AND available_at <= now()
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# One statement records a whole batch's outcomes; delays are computed by the relay, the clock is the
# database's.
_MARK = """
UPDATE outbox AS o SET
    status = v.status,
    sent_at = CASE WHEN v.status IN ('sent', 'unroutable') THEN now() ELSE o.sent_at END,
    attempts = o.attempts + v.failed,
    available_at = now() + make_interval(secs => v.delay),
    last_error = COALESCE(v.error, o.last_error)
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::float8[], $5::text[]) AS v(id, status, failed, delay, error)
WHERE o.id = v.id
"""

# Two counts, each over its own partial index (one scan over both statuses reads the whole table).
_COUNTS = """
SELECT (SELECT count(*) FROM outbox WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM outbox WHERE status = 'parked') AS parked
"""


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached for (part of) a batch: back off and try again."""


@dataclass
class _Outcomes:
    ids: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)

    def add(self, row_id: int, status: str, *, failed: int = 0, delay: float = 0.0, error: str | None = None) -> None:
        self.ids.append(row_id)
        self.statuses.append(status)
        self.failed.append(failed)
        self.delays.append(delay)
        self.errors.append(error)

    def count(self, status: str) -> int:
        return self.statuses.count(status)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        connection: AbstractRobustConnection,
        topology: Topology,
        producer: str,
        *,
        consumed_types: Collection[str] = (),
        batch_size: int = 500,
        max_attempts: int = 12,
        poll_interval: float = 1.0,
        max_backoff: float = 300.0,
        linger: float = 0.005,
        active_window: float = 0.1,
        active_poll: float = 0.005,
        publish_timeout: float = 10.0,
    ) -> None:
        self.db = db
        self.connection = connection
        self.topology = topology
        self.producer = producer
        self.consumed_types = frozenset(consumed_types)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.linger = linger
        # After a wake or a claim that found rows, poll every ``active_poll`` for ``active_window``
        # seconds: longer than a producer's WAKE_INTERVAL, so commits that did not notify are seen.
        self.active_window = max(active_window, 2 * WAKE_INTERVAL)
        self.active_poll = active_poll
        self.publish_timeout = publish_timeout
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.healthy = False
        # Why the last round failed (database or broker away), None once a round succeeds: /ready.
        self.last_error: str | None = None
        self.listening = False  # whether NOTIFY reaches us now (else only polling does)

    async def _get_exchange(self) -> AbstractExchange:
        if self._channel is None or self._channel.is_closed or self._exchange is None:
            self._channel = await self.connection.channel(publisher_confirms=True)
            self._exchange = await self.topology.declare_exchanges(self._channel)
        return self._exchange

    async def _drop_channel(self) -> None:
        channel, self._channel, self._exchange = self._channel, None, None
        if channel is not None:
            # Closed by us even when broken: a robust channel not closed by its owner is restored
            # (and kept) by its connection on every reconnect.
            with contextlib.suppress(Exception):
                await channel.close()

    async def _publish(self, exchange: AbstractExchange, row: Any) -> bool:
        """Publish with confirm; False when the broker returned it as unroutable (``mandatory``)."""
        message = amqp_message(row["event_id"], row["type"], row["body"], dict(row["headers"] or {}))
        result = await exchange.publish(message, routing_key=row["type"], mandatory=True, timeout=self.publish_timeout)
        return not isinstance(result, DeliveredMessage)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failures: 0.5 s doubling, capped, jittered."""
        return float(min(self.max_backoff, 0.5 * 2 ** min(attempts, 12)) * (0.5 + random.random()))

    def _failure(self, outcomes: _Outcomes, row: Any, error: str) -> None:
        attempts = int(row["attempts"]) + 1
        status = "parked" if attempts >= self.max_attempts else "pending"
        outcomes.add(row["id"], status, failed=1, delay=self.backoff(attempts), error=error[:500])

    async def relay_once(self) -> int:
        """Claim, publish and mark one batch. Returns how many rows were claimed.

        Raises :class:`BrokerUnavailable` (after recording what did go out) when the broker could
        not be reached for some of the batch: those rows stay pending with their attempts
        untouched, and :meth:`run` backs off.
        """
        # The channel first: no claim (row locks, an open transaction) waits on an absent broker.
        try:
            exchange = await asyncio.wait_for(self._get_exchange(), timeout=self.publish_timeout)
        except Exception as exc:
            await self._drop_channel()
            raise BrokerUnavailable(f"no channel to the broker: {exc!r}") from exc
        async with self.db.connection() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self.batch_size)
            if not rows:
                return 0
            outcomes, broker_error = await self._publish_all(exchange, rows)
            if outcomes.ids:
                await self._mark(conn, outcomes)
        self._count(outcomes)
        if broker_error is not None:
            FAILED.labels(self.producer, "broker").inc(len(rows) - len(outcomes.ids))
            raise BrokerUnavailable(f"{len(rows) - len(outcomes.ids)} event(s) not published: {broker_error!r}")
        return len(rows)

    async def _publish_all(self, exchange: AbstractExchange, rows: list[Any]) -> tuple[_Outcomes, BaseException | None]:
        """Each row's outcome, and the broker's failure when it was unreachable for some rows.

        An unreachable broker is nobody's event's fault: the rows it concerns get no outcome (they
        stay pending, attempts untouched), so an outage however long never parks anything. Only
        failures of a row's own (unroutable for a consumed type, a negative confirm) count toward
        ``max_attempts``.
        """
        outcomes = _Outcomes()
        # The whole batch is in flight at once; the confirms are awaited together.
        results = await asyncio.gather(*(self._publish(exchange, r) for r in rows), return_exceptions=True)
        broker_error: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if result is True:
                outcomes.add(row["id"], "sent")
            elif result is False and row["type"] not in self.consumed_types:
                outcomes.add(row["id"], "unroutable", error="no queue bound (no service consumes this type)")
            elif result is False:
                log.error("outbox.unroutable_consumed", event_type=row["type"], event_id=str(row["event_id"]))
                self._failure(outcomes, row, "unroutable, but a service consumes this type: is the topology declared?")
            elif isinstance(result, BaseException) and is_transient(result):
                broker_error = result
            else:
                self._failure(outcomes, row, repr(result))
        if any(isinstance(r, BaseException) for r in results):
            await self._drop_channel()
        return outcomes, broker_error

    async def _mark(self, conn: asyncpg.Connection, outcomes: _Outcomes) -> None:
        """Record the batch's outcome. Overridable only to simulate a crash in tests."""
        await conn.execute(_MARK, outcomes.ids, outcomes.statuses, outcomes.failed, outcomes.delays, outcomes.errors)

    def _count(self, outcomes: _Outcomes) -> None:
        PUBLISHED.labels(self.producer).inc(outcomes.count("sent"))
        UNROUTABLE.labels(self.producer).inc(outcomes.count("unroutable"))
        failed = sum(outcomes.failed)
        if failed:
            FAILED.labels(self.producer, "publish").inc(failed)
            error = next(e for e, f in zip(outcomes.errors, outcomes.failed, strict=True) if f)
            log.warning("outbox.publish_failed", count=failed, parked=outcomes.count("parked"), error=error)

    async def counts(self) -> dict[str, int]:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_COUNTS)
        counts = {"pending": int(row["pending"]), "parked": int(row["parked"])}
        BACKLOG.labels(self.producer).set(counts["pending"])
        PARKED.labels(self.producer).set(counts["parked"])
        return counts

    async def _listen(self) -> None:
        """Wake on NOTIFY from committing producers; polling covers a lost listener."""
        failures = 0
        while not self._stopping.is_set():
            try:
                conn = await asyncpg.connect(self.db.dsn, timeout=5)
                try:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
                    failures = 0
                    self.listening = True
                    self._wake.set()  # rows committed while we were not listening
                    waits = [asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(lost.wait())]
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waits:
                            w.cancel()
                finally:
                    self.listening = False
                    with contextlib.suppress(Exception):
                        await conn.close()
            except Exception as exc:  # whatever it was, the listener must come back: polling covers meanwhile
                failures += 1
                if failures == 1 or failures % 10 == 0:  # an outage is one line, then one now and then
                    log.warning("outbox.listen_failed", producer=self.producer, error=repr(exc), failures=failures)
                with contextlib.suppress(TimeoutError):
                    delay = min(30.0, 2.0 ** min(failures - 1, 5))
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _gauges(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):
                await self.counts()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=15)

    async def run(self) -> None:
        side = [asyncio.create_task(self._listen()), asyncio.create_task(self._gauges())]
        log.info("outbox.relay_started", producer=self.producer)
        failures = 0
        loop = asyncio.get_running_loop()
        active_until = 0.0
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    claimed = await self.relay_once()
                    self.healthy, self.last_error = True, None
                    failures = 0
                except Exception as exc:  # the database or the broker is away: back off, never die
                    self.healthy, self.last_error = False, f"{exc.__class__.__name__}: {str(exc)[:200]}"
                    failures += 1
                    log.error("outbox.relay_error", producer=self.producer, error=repr(exc))
                    if not isinstance(exc, BrokerUnavailable):
                        FAILED.labels(self.producer, "claim").inc()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=min(30.0, self.backoff(failures)))
                    continue
                now = loop.time()
                if claimed:
                    active_until = now + self.active_window
                if claimed >= self.batch_size:
                    continue  # more waiting: no sleep
                if now < active_until:
                    # Producers wake us at most every WAKE_INTERVAL each: while rows keep coming,
                    # poll at a short interval instead of waiting for the next notify.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.active_poll)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
                if self._wake.is_set():
                    active_until = loop.time() + self.active_window
                    if self.linger and not self._stopping.is_set():
                        # A short pause lets the commits arriving together share one claim and one
                        # round of confirms.
                        await asyncio.sleep(self.linger)
        finally:
            for task in side:
                task.cancel()
            for task in side:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._drop_channel()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
