"""The queues themselves, on this RabbitMQ (3.10): quorum everywhere, at-least-once dead-lettering,
and the replacement of the classic queues earlier releases declared.

The ladder's traffic (delay queue → work queue on expiry, work queue → dead-letter queue on the
delivery limit) is exercised end to end in ``test_backbone.py``; here the broker is asked what it
built, and shown keeping a dead letter that an at-most-once queue would drop.
"""

from __future__ import annotations

import asyncio
import subprocess

import aio_pika
import pytest

from tests.conftest import AMQP
from tests.integration.bus_fixtures import (
    TOPOLOGY,
    Bus,
    ThingHappened,
    bus,
    bus_db,
    bus_events,
    eventually,
    list_queues,
    rabbitmqctl_or_skip,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

__all__ = ["bus", "bus_db", "bus_events"]  # fixtures, re-exported for pytest

THING = ThingHappened.event_type
AT_LEAST_ONCE = ('{"x-dead-letter-strategy","at-least-once"}', '{"x-overflow","reject-publish"}')


def feature_flags(rabbitmqctl: str) -> dict[str, str]:
    out = subprocess.run(  # noqa: S603
        [rabbitmqctl, "-s", "list_feature_flags", "name", "state"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(line.split("\t", 1) for line in out.stdout.splitlines() if "\t" in line)


async def test_every_queue_is_quorum_and_every_dead_lettering_queue_is_at_least_once(bus: Bus) -> None:
    rabbitmqctl = rabbitmqctl_or_skip()
    # At-least-once dead-lettering needs these on 3.10; without stream_queue the broker would
    # silently fall back to at-most-once.
    flags = feature_flags(rabbitmqctl)
    assert flags.get("quorum_queue") == "enabled" and flags.get("stream_queue") == "enabled", flags

    consumer = await bus.consumer("c")
    name = consumer.consumer
    queues = list_queues(rabbitmqctl, TOPOLOGY.queue(name), "type", "arguments")
    assert set(queues) == set(TOPOLOGY.queues(name))
    assert {q: row[0] for q, row in queues.items()} == {q: "quorum" for q in queues}

    work = queues[TOPOLOGY.queue(name)][1]
    assert all(a in work for a in AT_LEAST_ONCE), work
    assert f'{{"x-dead-letter-routing-key","{TOPOLOGY.queue(name)}"}}' in work
    assert f'{{"x-delivery-limit",{TOPOLOGY.delivery_limit}}}' in work
    for attempt, delay in enumerate(TOPOLOGY.retry_delays_ms, start=1):
        retry = queues[TOPOLOGY.retry_queue(name, attempt)[0]][1]
        assert all(a in retry for a in AT_LEAST_ONCE), retry
        assert f'{{"x-message-ttl",{delay}}}' in retry
        assert f'{{"x-dead-letter-routing-key","{TOPOLOGY.queue(name)}"}}' in retry
    # The dead-letter queue dead-letters nothing and has no delivery limit: peeking must never drop a letter.
    dlq = queues[TOPOLOGY.dlq(name)][1]
    assert "x-delivery-limit" not in dlq and "x-dead-letter" not in dlq


async def test_a_dead_letter_whose_target_is_missing_is_kept_not_dropped(bus: Bus) -> None:
    """At-least-once on this broker: an expired message that cannot reach its target stays.

    A delay queue's target (the work queue) is deleted, then a message expires in the delay queue.
    The broker keeps it (counted, not ready) and would deliver it once the target exists again;
    the same queue declared at-most-once, as classic queues are, drops it. (The broker retries a
    held dead letter every few minutes, too slow to wait for here.) The counts come from the
    broker's queue statistics, which it refreshes every few seconds: hence the polling.
    """
    rabbitmqctl = rabbitmqctl_or_skip()
    consumer = await bus.consumer("c")
    name = consumer.consumer
    await consumer.stop()
    retry_queue = TOPOLOGY.retry_queue(name, 1)[0]
    at_most_once = f"{retry_queue}.at-most-once"
    bus.extra_queues.append(at_most_once)
    channel = await bus.admin.channel()
    await channel.declare_queue(
        at_most_once,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            # Long enough for the statistics to show it queued first, so its later 0 is a drop.
            "x-message-ttl": 12000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": TOPOLOGY.queue(name),
        },
    )
    await channel.queue_delete(TOPOLOGY.queue(name))
    await channel.close()
    for queue in (retry_queue, at_most_once):
        await bus.publish_raw(b"{}", routing_key=queue, message_id=f"to-{queue}")

    def counts(queue: str) -> list[str]:
        return list_queues(rabbitmqctl, queue, "messages", "messages_ready")[queue]

    async def state(queue: str, expected: list[str]) -> bool:
        return await asyncio.to_thread(counts, queue) == expected

    await eventually(lambda: state(at_most_once, ["1", "1"]), within=30, interval=0.5, what="the control queued")
    await eventually(
        lambda: state(retry_queue, ["1", "0"]), within=30, interval=0.5, what="the expired dead letter held"
    )
    await eventually(lambda: state(at_most_once, ["0", "0"]), within=30, interval=0.5, what="the control dropped")
    assert await asyncio.to_thread(counts, retry_queue) == ["1", "0"], "at-least-once: still held for its target"


@pytest.mark.parametrize("robust", [True, False], ids=["robust-channel", "plain-channel"])
async def test_an_empty_legacy_classic_queue_is_replaced_by_a_quorum_queue(bus: Bus, robust: bool) -> None:
    rabbitmqctl = rabbitmqctl_or_skip()
    name = bus.consumer_name("legacy")
    retry_queue = TOPOLOGY.retry_queue(name, 1)[0]
    connection = bus.admin if robust else await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        await channel.declare_queue(retry_queue, durable=True)  # classic, as earlier releases declared it
        await channel.declare_queue(TOPOLOGY.dlq(name), durable=True)
        queue = await TOPOLOGY.declare_consumer(channel, name, [THING])
        assert not channel.is_closed, "the replacement happens on a channel of its own"

        types = {q: row[0] for q, row in list_queues(rabbitmqctl, TOPOLOGY.queue(name), "type").items()}
        assert types == {q: "quorum" for q in TOPOLOGY.queues(name)}
        # Declared again (the next start) it is found as declared; the channel still works.
        await TOPOLOGY.declare_consumer(channel, name, [THING])
        await bus.publish_raw(b"{}", routing_key=THING, message_id="after-replace", event_type=THING)

        async def arrived() -> bool:
            return await bus.queue_depth(queue.name) == 1

        await eventually(arrived, what="an event routed to the declared queue")
        await channel.close()
    finally:
        if not robust:
            await connection.close()


async def test_a_legacy_queue_holding_messages_is_left_alone_with_a_clear_error(bus: Bus) -> None:
    name = bus.consumer_name("legacy")
    dlq = TOPOLOGY.dlq(name)
    channel = await bus.admin.channel()
    await channel.declare_queue(dlq, durable=True)  # classic, holding a dead letter
    await bus.publish_raw(b"an old dead letter", routing_key=dlq, message_id="old")

    with pytest.raises(RuntimeError, match=r"holds 1 message\(s\); drain it") as raised:
        await TOPOLOGY.declare_consumer(channel, name, [THING])
    assert dlq in str(raised.value)
    assert await bus.queue_depth(dlq) == 1, "the dead letter must not be lost"
    await channel.close()
