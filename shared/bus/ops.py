"""Operations on the backbone: infrastructure checks, topology, outbox backlog, dead letters.

Used by ``tools/siyuctl`` (the operator command) and by the tests. Dead letters are read with
``basic.get`` without acknowledging, so listing never removes anything; re-driving publishes a
copy to the consumer's own queue (not the topic exchange, so other services do not see it twice)
with confirms, and only then acknowledges the dead letter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage
from sqlalchemy import make_url

from shared.bus.outbox import NOTIFY_CHANNEL
from shared.bus.topology import Topology


async def check_infrastructure(postgres_dsn: str, amqp_url: str) -> list[str]:
    """What is missing, each as a sentence saying how to fix it. Empty when all is well."""
    problems: list[str] = []
    try:
        conn = await asyncpg.connect(postgres_dsn.rstrip("/") + "/postgres", timeout=3)
        await conn.close()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        u = make_url(postgres_dsn)
        problems.append(
            f"PostgreSQL is not reachable at {u.host}:{u.port or 5432} ({exc.__class__.__name__}: {exc}). "
            "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
            "(or docker compose up postgres), or point SIYU_POSTGRES_DSN at your server."
        )
    try:
        connection = await aio_pika.connect(amqp_url, timeout=3)
        await connection.close()
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
        problems.append(
            f"RabbitMQ is not reachable at {amqp_url.split('@')[-1]} ({exc.__class__.__name__}: {exc}). "
            "Start it with: rabbitmq-server -detached (or docker compose up rabbitmq), "
            "or point SIYU_AMQP_URL at your broker."
        )
    return problems


async def declare_topology(amqp_url: str, namespace: str, consumers: Mapping[str, Sequence[str]]) -> None:
    topology = Topology(namespace=namespace)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await topology.declare_exchanges(channel)
        for consumer, types in consumers.items():
            await topology.declare_consumer(channel, consumer, types)


def _plain_dsn(database_url: str) -> str:
    """asyncpg takes ``postgresql://``; settings may hand over SQLAlchemy's ``postgresql+asyncpg://``."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


_BACKLOG = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'pending' AND attempts > 0) AS failing,
       count(*) FILTER (WHERE status = 'parked') AS parked,
       count(*) FILTER (WHERE status = 'unroutable') AS unroutable,
       extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8 AS oldest_pending_seconds,
       (array_agg(last_error ORDER BY id DESC) FILTER (WHERE status IN ('pending', 'parked') AND attempts > 0))[1]
           AS last_error
FROM outbox
"""

_PARKED = """
SELECT id, event_id, type, attempts, last_error, created_at
FROM outbox WHERE status = 'parked' ORDER BY id LIMIT $1
"""

# Back to pending with a fresh budget (``max_attempts`` more tries), due now by the database's clock.
_RETRY = """
UPDATE outbox SET status = 'pending', attempts = 0, available_at = now()
WHERE status = 'parked' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
"""


async def outbox_backlog(service: str, database_url: str) -> dict[str, Any]:
    """One service's outbox: pending, failing (pending after a failed attempt), parked (given up on
    after ``max_attempts``; ``outbox_retry`` re-queues them), unroutable, and the oldest pending
    row's age in seconds (None when nothing is pending)."""
    conn = await asyncpg.connect(_plain_dsn(database_url), timeout=5)
    try:
        row = await conn.fetchrow(_BACKLOG)
    finally:
        await conn.close()
    assert row is not None  # an aggregate always answers one row
    return {"service": service, **dict(row)}


async def outbox_parked(database_url: str, limit: int = 100) -> list[dict[str, Any]]:
    """The parked rows, oldest first: what failed ``max_attempts`` times and why."""
    conn = await asyncpg.connect(_plain_dsn(database_url), timeout=5)
    try:
        return [dict(r) for r in await conn.fetch(_PARKED, limit)]
    finally:
        await conn.close()


async def outbox_retry(database_url: str, ids: Sequence[int] | None = None) -> int:
    """Move parked rows (those in ``ids``, or all with None) back to pending. Returns how many."""
    conn = await asyncpg.connect(_plain_dsn(database_url), timeout=5)
    try:
        status = await conn.execute(_RETRY, None if ids is None else list(ids))
        retried = int(status.rsplit(" ", 1)[-1])
        if retried:
            await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)  # wake the relay now
        return retried
    finally:
        await conn.close()


def _summary(message: AbstractIncomingMessage) -> dict[str, Any]:
    headers = message.headers or {}
    return {
        "event_id": message.message_id,
        "type": message.type,
        "attempts": headers.get("x-siyu-attempt"),
        "error": headers.get("x-siyu-error") or _death_reason(headers),
        "timestamp": message.timestamp,
    }


def _death_reason(headers: Mapping[str, Any]) -> str | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths:
        first = deaths[0]
        if isinstance(first, Mapping):
            return f"broker: {first.get('reason')} (delivery limit or rejection)"
    return None


async def _peek(amqp_url: str, queue_name: str, limit: int | None = None) -> list[AbstractIncomingMessage]:
    """Read messages without acknowledging them; closing the channel puts them all back."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        out: list[AbstractIncomingMessage] = []
        while limit is None or len(out) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            out.append(message)
        return out


async def dlq_list(amqp_url: str, namespace: str, consumer: str, limit: int = 100) -> dict[str, Any]:
    topology = Topology(namespace=namespace)
    messages = await _peek(amqp_url, topology.dlq(consumer), limit)
    return {"queue": topology.dlq(consumer), "shown": len(messages), "messages": [_summary(m) for m in messages]}


async def dlq_show(amqp_url: str, namespace: str, consumer: str, index: int) -> dict[str, Any]:
    topology = Topology(namespace=namespace)
    messages = await _peek(amqp_url, topology.dlq(consumer), index + 1)
    if index >= len(messages):
        return {"error": f"{topology.dlq(consumer)} holds {len(messages)} message(s); index {index} is past the end"}
    m = messages[index]
    try:
        body: Any = json.loads(m.body)
    except ValueError:
        body = m.body.decode("utf-8", "replace")
    return {**_summary(m), "headers": dict(m.headers or {}), "body": body}


async def _settle(
    connection: aio_pika.abc.AbstractConnection, queue_name: str, at_least: int, within: float = 2.0
) -> None:
    """Wait (bounded) until ``queue_name`` holds at least ``at_least`` ready messages again.

    Messages read and put back (a closed channel's, a nack's) return to a quorum queue through its
    log, a moment after the client is done: without this, a reader right after (a re-drive after a
    listing) could miss them.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    channel = await connection.channel()
    try:
        while loop.time() < deadline:
            queue = await channel.declare_queue(queue_name, passive=True)
            if (queue.declaration_result.message_count or 0) >= at_least:
                return
            await asyncio.sleep(0.02)
    finally:
        await channel.close()


async def dlq_peek(
    amqp_url: str, namespace: str, consumers: Sequence[str], limit: int = 100
) -> dict[str, list[dict[str, Any]]]:
    """Each consumer's dead letters (summaries, oldest first, at most ``limit``), over one connection;
    nothing is removed. A consumer whose dead-letter queue was never declared has none."""
    topology = Topology(namespace=namespace)
    out: dict[str, list[dict[str, Any]]] = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for consumer in consumers:
            # A channel per queue: a queue that does not exist closes the channel it was asked on,
            # and closing a channel puts back every message read on it.
            channel = await connection.channel()
            try:
                queue = await channel.get_queue(topology.dlq(consumer), ensure=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                out[consumer] = []
                continue
            present = queue.declaration_result.message_count or 0
            messages: list[AbstractIncomingMessage] = []
            while len(messages) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                messages.append(message)
            out[consumer] = [_summary(m) for m in messages]
            await channel.close()
            await _settle(connection, topology.dlq(consumer), present)
    return out


async def dlq_redrive(
    amqp_url: str,
    namespace: str,
    consumer: str,
    *,
    limit: int | None = None,
    event_type: str | None = None,
    event_id: str | None = None,
) -> int:
    """Move dead letters back to the consumer's queue with a fresh attempt count. Returns how many.

    ``event_type`` / ``event_id`` move only those (every copy of that event: the consumer's inbox
    makes a second copy a no-op)."""
    topology = Topology(namespace=namespace)
    connection = await aio_pika.connect(amqp_url)
    moved = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.get_queue(topology.dlq(consumer), ensure=True)
        skipped: list[AbstractIncomingMessage] = []
        # Only the dead letters present now: one that fails again lands behind them and must not loop.
        remaining = queue.declaration_result.message_count or 0
        while remaining > 0 and (limit is None or moved < limit):
            remaining -= 1
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if (event_type and message.type != event_type) or (event_id and message.message_id != event_id):
                skipped.append(message)
                continue
            headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
            copy = aio_pika.Message(
                body=message.body,
                message_id=message.message_id,
                type=message.type,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={**headers, "x-siyu-redriven": True},
                timestamp=message.timestamp,
            )
            result = await channel.default_exchange.publish(copy, routing_key=topology.queue(consumer), mandatory=True)
            if isinstance(result, DeliveredMessage):
                await message.nack(requeue=True)
                raise RuntimeError(f"{topology.queue(consumer)} does not exist; run `siyuctl topology` first")
            await message.ack()
            moved += 1
        for message in skipped:
            await message.nack(requeue=True)
        await _settle(connection, topology.dlq(consumer), (queue.declaration_result.message_count or 0) - moved)
    return moved
