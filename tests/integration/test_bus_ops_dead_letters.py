"""``shared.bus.ops``: dead letters read across consumers and re-driven one event at a time, on the
real broker (a namespace of this module's own, removed at the end)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from shared.bus import ops
from shared.bus.topology import Topology, amqp_message
from tests.conftest import AMQP, NAMESPACE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OPS_NAMESPACE = f"{NAMESPACE}ops."
TOPOLOGY = Topology(namespace=OPS_NAMESPACE)
CONSUMERS = ("ledger", "mailer")


@pytest.fixture
async def broker() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for consumer in CONSUMERS:
            await TOPOLOGY.declare_consumer(channel, consumer, ["thing.happened"])
            await (await channel.get_queue(TOPOLOGY.queue(consumer))).purge()
            await (await channel.get_queue(TOPOLOGY.dlq(consumer))).purge()
        yield channel
        await TOPOLOGY.delete_all(channel, CONSUMERS)


async def dead(channel: aio_pika.abc.AbstractChannel, consumer: str, event_id: str) -> None:
    """A dead letter as the dead-letter exchange leaves it."""
    message = amqp_message(event_id, "thing.happened", b'{"n": 1}', {"x-siyu-attempt": 6, "x-siyu-error": "boom"})
    await channel.default_exchange.publish(message, routing_key=TOPOLOGY.dlq(consumer))


async def depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    return int((await channel.declare_queue(name, passive=True)).declaration_result.message_count or 0)


async def test_peek_reads_every_consumers_dead_letters_and_removes_none(broker: aio_pika.abc.AbstractChannel) -> None:
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    await dead(broker, "ledger", first)
    await dead(broker, "ledger", second)
    await dead(broker, "mailer", third)

    peeked = await ops.dlq_peek(AMQP, OPS_NAMESPACE, [*CONSUMERS, "never-declared"], limit=10)

    assert [m["event_id"] for m in peeked["ledger"]] == [first, second]
    assert [m["event_id"] for m in peeked["mailer"]] == [third]
    assert peeked["never-declared"] == [], "a consumer whose dead-letter queue does not exist has none"
    summary = peeked["ledger"][0]
    assert summary["type"] == "thing.happened" and summary["attempts"] == 6 and summary["error"] == "boom"
    assert summary["timestamp"] is not None
    assert await depth(broker, TOPOLOGY.dlq("ledger")) == 2 and await depth(broker, TOPOLOGY.dlq("mailer")) == 1
    assert [m["event_id"] for m in (await ops.dlq_peek(AMQP, OPS_NAMESPACE, ["ledger"], limit=1))["ledger"]] == [first]


async def test_redrive_by_event_id_moves_that_event_only(broker: aio_pika.abc.AbstractChannel) -> None:
    keep, move = str(uuid.uuid4()), str(uuid.uuid4())
    await dead(broker, "ledger", keep)
    await dead(broker, "ledger", move)
    await dead(broker, "ledger", move)  # a second copy of the same event (a re-delivery that died too)
    await dead(broker, "mailer", move)

    moved = await ops.dlq_redrive(AMQP, OPS_NAMESPACE, "ledger", event_id=move)

    assert moved == 2
    left = await ops.dlq_peek(AMQP, OPS_NAMESPACE, CONSUMERS)
    assert [m["event_id"] for m in left["ledger"]] == [keep]
    assert [m["event_id"] for m in left["mailer"]] == [move], "another consumer's copy is not touched"
    queue = await broker.get_queue(TOPOLOGY.queue("ledger"))
    redriven = [await queue.get(no_ack=True) for _ in range(2)]
    assert {m.message_id for m in redriven} == {move}
    # Back with a fresh attempt count, marked as re-driven.
    assert all(m.headers.get("x-siyu-redriven") is True and "x-siyu-attempt" not in m.headers for m in redriven)
    assert await ops.dlq_redrive(AMQP, OPS_NAMESPACE, "ledger", event_id=str(uuid.uuid4())) == 0
    assert await depth(broker, TOPOLOGY.dlq("ledger")) == 1
