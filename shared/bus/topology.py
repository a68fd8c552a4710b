"""RabbitMQ topology: one topic exchange, one quorum queue per consuming service.

    siyu.events (topic) ──<event type>──▶ <service>.events (quorum, x-delivery-limit)
                                              │ handler failed: republish to a delay queue
                                              ▼
                     <service>.events.retry.<ms> (TTL) ──expires──▶ back to <service>.events
    poison / attempts exhausted / delivery limit ──▶ siyu.dlx (direct) ──▶ <service>.events.dlq

Delays are fixed per queue (queue-level TTL, so expiry is in order); the delay is in the name so a
changed schedule declares new queues instead of clashing with old arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

DEFAULT_RETRY_DELAYS_MS: tuple[int, ...] = (1_000, 5_000, 30_000, 120_000, 600_000)
DEFAULT_DELIVERY_LIMIT = 20


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
        # A classic queue: operators peek at dead letters (get, then requeue), and a quorum queue
        # would count every peek as a delivery and, from RabbitMQ 4, drop a letter after 20 peeks.
        dlq = await channel.declare_queue(self.dlq(consumer), durable=True, arguments={"x-queue-type": "classic"})
        await dlq.bind(self.dead_letter_exchange, routing_key=name)
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                # Poison that kills the consumer (not a handler error) is redelivered at most this often.
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dead_letter_exchange,
                "x-dead-letter-routing-key": name,
                # Quorum queues dead-letter at-most-once unless asked; this needs reject-publish.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        for event_type in sorted(set(event_types)):
            await queue.bind(exchange, routing_key=event_type)
        for attempt in range(1, len(self.retry_delays_ms) + 1):
            retry_name, delay = self.retry_queue(consumer, attempt)
            await channel.declare_queue(
                retry_name,
                durable=True,
                arguments={
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": name,
                },
            )
        return queue

    async def delete_all(self, channel: AbstractChannel, consumers: Iterable[str]) -> None:
        """Remove a namespace's queues and exchanges (tests clean up their own namespace)."""
        for consumer in consumers:
            names = [self.queue(consumer), self.dlq(consumer)]
            names += [self.retry_queue(consumer, a)[0] for a in range(1, len(self.retry_delays_ms) + 1)]
            for n in names:
                await channel.queue_delete(n)
        await channel.exchange_delete(self.exchange)
        await channel.exchange_delete(self.dead_letter_exchange)
