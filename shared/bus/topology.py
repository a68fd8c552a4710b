"""RabbitMQ topology: one topic exchange, one quorum queue per consuming service.

    siyu.events (topic) ──<event type>──▶ <service>.events (quorum, x-delivery-limit)
                                              │ handler failed for a reason of its own: republished
                                              ▼ (confirmed) to the delay queue of its attempt
                     <service>.events.retry.<ms> (quorum, TTL) ──expires──▶ back to <service>.events
    poison / attempts exhausted / delivery limit ──▶ siyu.dlx (direct) ──▶ <service>.events.dlq (quorum)

Every queue is a quorum queue, and every queue that dead-letters does so at-least-once
(``x-dead-letter-strategy: at-least-once`` with ``x-overflow: reject-publish``, RabbitMQ ≥ 3.10 with
the ``stream_queue`` feature flag enabled, as a default 3.10 install has it):
a message moving from a delay queue back to its work queue, or from a work queue to its dead-letter
queue, is only removed from the source once the target confirmed it. A transient failure (the
database away) never enters this ladder: the consumer holds the message and pauses
(``shared.bus.consumer``).

Delays are fixed per queue (queue-level TTL, so expiry is in order); the delay is in the name so a
changed schedule declares new queues instead of clashing with old arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from shared.observability import get_logger

log = get_logger(__name__)

DEFAULT_RETRY_DELAYS_MS: tuple[int, ...] = (1_000, 5_000, 30_000, 120_000, 600_000)
DEFAULT_DELIVERY_LIMIT = 20

_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def amqp_message(event_id: Any, event_type: str, body: bytes, headers: dict[str, Any]) -> aio_pika.Message:
    """An event as it goes on the wire (contracts.md, "Events on the wire")."""
    return aio_pika.Message(
        body=body,
        message_id=str(event_id),
        type=event_type,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
        timestamp=datetime.now(UTC),
    )


@dataclass(frozen=True)
class Topology:
    namespace: str = ""
    retry_delays_ms: Sequence[int] = field(default=DEFAULT_RETRY_DELAYS_MS)
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT

    @property
    def exchange(self) -> str:
        return f"{self.namespace}siyu.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}siyu.dlx"

    def queue(self, consumer: str) -> str:
        return f"{self.namespace}{consumer}.events"

    def dlq(self, consumer: str) -> str:
        return f"{self.queue(consumer)}.dlq"

    def retry_queue(self, consumer: str, attempt: int) -> tuple[str, int]:
        """The delay queue for the ``attempt``-th retry (1-based), and its delay in ms."""
        delays = self.retry_delays_ms
        delay = delays[min(attempt, len(delays)) - 1]
        return f"{self.queue(consumer)}.retry.{delay}ms", delay

    def queues(self, consumer: str) -> list[str]:
        """Every queue a consumer owns: work queue, delay queues, dead-letter queue."""
        names = [self.queue(consumer), self.dlq(consumer)]
        return names + [self.retry_queue(consumer, a)[0] for a in range(1, len(self.retry_delays_ms) + 1)]

    @property
    def max_attempts(self) -> int:
        """Handler runs before a message is dead-lettered: the first one plus one per delay."""
        return len(self.retry_delays_ms) + 1

    async def declare_exchanges(self, channel: AbstractChannel) -> AbstractExchange:
        await channel.declare_exchange(self.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        return await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)

    async def declare_consumer(
        self, channel: AbstractChannel, consumer: str, event_types: Iterable[str]
    ) -> AbstractQueue:
        """Declare a consumer's queue, its bindings, retry queues and dead-letter queue."""
        exchange = await self.declare_exchanges(channel)
        name = self.queue(consumer)
        # No delivery limit on the dead-letter queue: operators peek at it (get, then requeue), and
        # a limit would drop a letter after that many peeks.
        dlq = await _declare_quorum(channel, self.dlq(consumer), {})
        await dlq.bind(self.dead_letter_exchange, routing_key=name)
        queue = await _declare_quorum(
            channel,
            name,
            {
                # Poison that kills the consumer (not a handler error) is redelivered at most this often.
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dead_letter_exchange,
                "x-dead-letter-routing-key": name,
                **_AT_LEAST_ONCE,
            },
        )
        for event_type in sorted(set(event_types)):
            await queue.bind(exchange, routing_key=event_type)
        for attempt in range(1, len(self.retry_delays_ms) + 1):
            retry_name, delay = self.retry_queue(consumer, attempt)
            await _declare_quorum(
                channel,
                retry_name,
                {
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": name,
                    **_AT_LEAST_ONCE,
                },
            )
        return queue

    async def delete_all(self, channel: AbstractChannel, consumers: Iterable[str]) -> None:
        """Remove a namespace's queues and exchanges (tests clean up their own namespace)."""
        for consumer in consumers:
            for n in self.queues(consumer):
                await channel.queue_delete(n)
        await channel.exchange_delete(self.exchange)
        await channel.exchange_delete(self.dead_letter_exchange)


async def _declare_quorum(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> AbstractQueue:
    """Declare a durable quorum queue; replace an EMPTY queue declared with other arguments.

    Earlier releases declared the delay and dead-letter queues as classic queues. An empty one is
    replaced in place; one holding messages is left alone with an error that says what to do, since
    deleting it would lose them.
    """
    args = {"x-queue-type": "quorum", **arguments}
    await _replace_if_inequivalent(channel, name, args)
    return await channel.declare_queue(name, durable=True, arguments=args)


async def _replace_if_inequivalent(channel: AbstractChannel, name: str, args: dict[str, Any]) -> None:
    """Try the declaration on a throwaway channel first: a mismatch closes the channel it is made
    on, and the caller's (a robust one restores itself on close) must not be the one disturbed."""
    connection = (await channel.get_underlay_channel()).connection
    probe = await connection.channel()
    try:
        try:
            await probe.queue_declare(name, durable=True, arguments=args)
            return
        except aiormq.exceptions.ChannelPreconditionFailed:
            probe = await connection.channel()  # the broker closed the first one over the mismatch
        count = (await probe.queue_declare(name, passive=True)).message_count or 0
        if count:
            raise RuntimeError(
                f"queue {name} exists with other arguments and holds {count} message(s); drain it "
                f"(siyuctl dlq redrive, or wait for its delays) and delete it, then declare the topology again"
            )
        await probe.queue_delete(name, if_empty=True)
        log.warning("topology.queue_replaced", queue=name, reason="arguments changed and it was empty")
    finally:
        if not probe.is_closed:
            await probe.close()
