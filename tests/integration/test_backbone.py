"""The event backbone against the real broker and database: outbox, relay, inbox, retries, DLQ.

Each test runs real :class:`OutboxRelay` and :class:`InboxConsumer` instances (subclassed only to
record what happened or to stop at a chosen point) over RabbitMQ and PostgreSQL. The effect of
handling an event is a row in ``effects``, written in the inbox's transaction and deliberately
not unique, so a duplicated effect is counted rather than hidden by a constraint.

Waiting is bounded (``eventually``); nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractExchange
from prometheus_client import REGISTRY

from shared.bus import ops
from shared.bus.consumer import EventContext, Prefetching
from shared.bus.relay import OutboxRelay, _Outcomes
from shared.events.envelope import Envelope
from tests.conftest import AMQP, NAMESPACE
from tests.integration.bus_fixtures import (
    PRODUCER,
    TOPOLOGY,
    Behaviour,
    Bus,
    NobodyListens,
    ThingHappened,
    bus,
    bus_db,
    bus_events,
    close_connections_named,
    eventually,
    rabbitmqctl_or_skip,
    record_effect,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(45)]

__all__ = ["bus", "bus_db", "bus_events"]  # fixtures, re-exported for pytest

THING = ThingHappened.event_type


async def dlq_size(consumer: str) -> int:
    return int((await ops.dlq_list(AMQP, NAMESPACE, consumer))["shown"])


def broker_failures() -> float:
    """Events the relay could not publish because the broker was away (a process-wide counter)."""
    value = REGISTRY.get_sample_value("siyu_outbox_publish_failures_total", {"producer": PRODUCER, "reason": "broker"})
    return value or 0.0


# ---------------------------------------------------------------------------------------------
# 1. relay stopped between publish and mark-sent


class CrashAfterPublish(OutboxRelay):
    """Dies once after the broker confirmed the batch and before the rows are marked sent."""

    crashes = 1

    async def _mark(self, conn: asyncpg.Connection, outcomes: _Outcomes) -> None:
        if self.crashes:
            self.crashes -= 1
            raise ConnectionError("relay stopped after publishing, before marking sent")
        await super()._mark(conn, outcomes)


async def test_relay_stopped_after_publish_redelivers_and_the_effect_happens_once(bus: Bus) -> None:
    consumer = await bus.consumer("c")
    _, seen = await bus.probe(THING)
    [event_id] = await bus.db.add_events([1])
    connection = await bus.connect("relay")

    crashing = bus.relay(CrashAfterPublish, connection=connection)
    with pytest.raises(ConnectionError):
        await crashing.relay_once()
    [row] = await bus.db.outbox_rows()
    assert row.status == "pending", "the claim was rolled back with the crash: the row must be published again"

    # A restarted relay picks the row up on its own and publishes it a second time.
    restarted = bus.relay(connection=connection, poll_interval=0.05)
    bus.run_relay(restarted)

    async def both_delivered_and_handled() -> bool:
        return len(seen) == 2 and len(consumer.outcomes) == 2

    await eventually(both_delivered_and_handled, what="the event on the wire twice and handled twice")
    assert [m.message_id for m in seen] == [str(event_id)] * 2
    assert sorted(consumer.outcomes) == ["duplicate", "handled"]
    assert await bus.db.effect_counts(consumer.consumer) == {event_id: 1}
    assert await bus.db.inbox_ids(consumer.consumer) == [event_id]

    async def marked_sent() -> bool:  # the running relay marks the row after the broker confirmed it
        return [r.status for r in await bus.db.outbox_rows()] == ["sent"]

    await eventually(marked_sent, what="the row marked sent")


# ---------------------------------------------------------------------------------------------
# 2. a failing handler: retried with backoff, dead-lettered, inspected, re-driven


async def test_failing_handler_is_retried_with_backoff_then_dead_lettered_and_redriven(bus: Bus) -> None:
    behaviour = Behaviour(fail="boom: the handler's dependency is down")
    consumer = await bus.consumer("c", deps=behaviour)
    [event_id] = await bus.db.add_events([7])
    relay = bus.relay(connection=await bus.connect("relay"))
    assert await relay.relay_once() == 1

    async def dead_lettered() -> bool:
        return await dlq_size(consumer.consumer) == 1

    await eventually(dead_lettered, what="the event in the DLQ")
    assert TOPOLOGY.max_attempts == 3

    # Three runs of the handler: the first, then one per delay queue; each a separate delivery.
    assert [d.attempt for d in consumer.deliveries] == [None, 2, 3]
    assert [e for _, e in behaviour.calls] == [event_id] * 3
    times = [d.at for d in consumer.deliveries]
    assert times == sorted(times) and len(set(times)) == 3
    # Each retry came back through its delay queue (expired there), in schedule order.
    retried_via = [
        [(str(x["queue"]), str(x["reason"])) for x in (d.headers.get("x-death") or [])] for d in consumer.deliveries
    ]
    q200, q400 = TOPOLOGY.retry_queue(consumer.consumer, 1)[0], TOPOLOGY.retry_queue(consumer.consumer, 2)[0]
    assert retried_via[0] == []
    assert retried_via[1] == [(q200, "expired")]
    assert sorted(retried_via[2]) == sorted([(q200, "expired"), (q400, "expired")])
    # The failed attempts left nothing behind: effect and inbox row rolled back with the handler.
    assert await bus.db.effect_counts(consumer.consumer) == {}
    assert await bus.db.inbox_ids(consumer.consumer) == []

    listing = await ops.dlq_list(AMQP, NAMESPACE, consumer.consumer)
    assert listing["queue"] == TOPOLOGY.dlq(consumer.consumer)
    [summary] = listing["messages"]
    assert summary["event_id"] == str(event_id)
    assert summary["type"] == THING
    assert summary["attempts"] == 3
    assert "boom" in summary["error"]
    shown = await ops.dlq_show(AMQP, NAMESPACE, consumer.consumer, 0)
    assert shown["body"]["event_id"] == str(event_id)
    assert shown["headers"]["x-siyu-queue"] == consumer.consumer
    assert "past the end" in (await ops.dlq_show(AMQP, NAMESPACE, consumer.consumer, 1))["error"]
    assert await dlq_size(consumer.consumer) == 1, "listing and showing must not consume dead letters"

    # Fix the cause, re-drive: handled once, with a fresh attempt count, and the DLQ is empty.
    behaviour.fail = None
    assert await ops.dlq_redrive(AMQP, NAMESPACE, consumer.consumer) == 1

    async def handled() -> bool:
        return "handled" in consumer.outcomes

    await eventually(handled, what="the re-driven event handled")
    assert consumer.deliveries[-1].attempt is None
    assert consumer.deliveries[-1].headers.get("x-siyu-redriven") is True
    assert await bus.db.effect_counts(consumer.consumer) == {event_id: 1}
    assert await bus.db.inbox_ids(consumer.consumer) == [event_id]
    assert await dlq_size(consumer.consumer) == 0


# ---------------------------------------------------------------------------------------------
# 3. poison goes to the DLQ at once


async def test_poison_messages_are_dead_lettered_at_once_without_retries(bus: Bus) -> None:
    behaviour = Behaviour()
    consumer = await bus.consumer("c", deps=behaviour)
    queue = TOPOLOGY.queue(consumer.consumer)
    unknown = Envelope.wrap(ThingHappened(n=1), producer=PRODUCER, event_type="bustest.unknown.thing")
    bad_data = Envelope.wrap(ThingHappened(n=1), producer=PRODUCER).model_copy(update={"data": {"n": "not a number"}})
    await bus.publish_raw(b"\x00\xffthis is not JSON", routing_key=queue)
    await bus.publish_raw(b'{"hello": "world"}', routing_key=queue, message_id="not-an-envelope")
    await bus.publish_raw(unknown.model_dump_json().encode(), routing_key=queue, message_id=str(unknown.event_id))
    await bus.publish_raw(bad_data.model_dump_json().encode(), routing_key=queue, message_id=str(bad_data.event_id))
    # Garbage in our own retry header must not wedge the consumer either.
    await bus.publish_raw(b"[]", routing_key=queue, message_id="bad-header", headers={"x-siyu-attempt": "many"})

    async def all_dead() -> bool:
        return await dlq_size(consumer.consumer) == 5

    await eventually(all_dead, what="five poison messages in the DLQ")
    assert len(consumer.deliveries) == 5, "poison must not be retried"
    assert behaviour.calls == []
    assert consumer.outcomes == ["raised PoisonMessage"] * 5
    messages = (await ops.dlq_list(AMQP, NAMESPACE, consumer.consumer))["messages"]
    assert [m["attempts"] for m in messages] == [1, 1, 1, 1, 1]
    assert all(m["error"].startswith("poison:") for m in messages), messages
    errors = " | ".join(m["error"] for m in messages)
    assert "not a valid envelope" in errors
    assert "no handler for bustest.unknown.thing" in errors
    assert f"invalid data for {THING}" in errors
    for i in range(5):
        assert "x-death" not in (await ops.dlq_show(AMQP, NAMESPACE, consumer.consumer, i))["headers"]
    assert await bus.db.inbox_ids(consumer.consumer) == []


async def test_redriving_poison_while_the_consumer_runs_moves_each_dead_letter_once(bus: Bus) -> None:
    """A re-drive must terminate even when its messages come straight back to the DLQ."""
    consumer = await bus.consumer("c")
    queue = TOPOLOGY.queue(consumer.consumer)
    for i in range(3):
        await bus.publish_raw(b"garbage", routing_key=queue, message_id=f"poison-{i}")

    async def dead(n: int) -> bool:
        return await dlq_size(consumer.consumer) == n

    await eventually(lambda: dead(3), what="three poison messages in the DLQ")
    moved = await ops.dlq_redrive(AMQP, NAMESPACE, consumer.consumer)
    assert moved == 3
    await eventually(lambda: dead(3), what="the re-driven poison back in the DLQ")
    assert len(consumer.deliveries) == 6


# ---------------------------------------------------------------------------------------------
# 4. the broker drops the connections mid-run


async def test_connections_dropped_mid_run_lose_nothing_and_duplicate_no_effect(bus: Bus) -> None:
    """Both connections are closed by the broker twice while 300 events flow.

    The first time, work is caught in flight on purpose: the relay holds a claimed batch and
    publishes it only once its connection is down (it reconnects after 1.5 s), and the consumer
    holds messages whose effect is committed but not yet acknowledged, so they come again. The
    second time falls wherever it falls.
    """
    rabbitmqctl = rabbitmqctl_or_skip()
    relay_connection = await bus.connect("relay", reconnect_interval=1.5)
    consumer_connection = await bus.connect("consumer")

    behaviour = Behaviour()
    consumer = await bus.consumer("c", deps=behaviour, connection=consumer_connection, prefetch=50)
    relay = bus.relay(GatedRelay, connection=relay_connection, batch_size=25, poll_interval=0.2, max_backoff=1.0)
    bus.run_relay(relay)

    ids: list[uuid.UUID] = []
    failures_before = broker_failures()

    async def produce(start: int, stop: int) -> None:
        for chunk in range(start, stop, 10):
            ids.extend(await bus.db.add_events(range(chunk, min(chunk + 10, stop))))
            await asyncio.sleep(0.01)

    async def effects_at_least(n: int) -> bool:
        return sum((await bus.db.effect_counts(consumer.consumer)).values()) >= n

    async def consumer_held() -> bool:
        return behaviour.held > 0

    async def publish_held() -> bool:
        return relay.held > 0

    async def drop_connections() -> None:
        assert await asyncio.to_thread(close_connections_named, rabbitmqctl, bus.connection_name("")) == 2

    await produce(0, 100)
    await eventually(lambda: effects_at_least(30), what="progress before the first fault")
    behaviour.gate.clear()
    await produce(100, 120)
    await eventually(consumer_held, what="a message caught with its effect committed, not acknowledged")
    relay.gate.clear()
    await produce(120, 140)
    await eventually(publish_held, what="the relay caught holding a claimed batch")
    # The relay publishes its held batch the moment it learns its connection is gone.
    relay_connection.close_callbacks.add(lambda *_: relay.gate.set())
    await drop_connections()
    behaviour.gate.set()
    await asyncio.wait_for(relay.gate.wait(), timeout=10)

    # The second drop lands wherever it lands while events keep coming.
    producer = asyncio.create_task(produce(140, 300))
    await eventually(lambda: effects_at_least(180), within=20, what="progress after the first fault")
    await drop_connections()
    await asyncio.wait_for(producer, timeout=20)

    async def all_effects() -> bool:
        return len(await bus.db.effect_counts(consumer.consumer)) == len(ids)

    await eventually(all_effects, within=30, what="all 300 effects")
    counts = await bus.db.effect_counts(consumer.consumer)
    assert len(ids) == 300
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    assert sorted(await bus.db.inbox_ids(consumer.consumer)) == sorted(ids)

    async def all_sent() -> bool:
        return all(r.status == "sent" for r in await bus.db.outbox_rows())

    await eventually(all_sent, what="every outbox row marked sent")
    # The faults did hit: publishes failed and were retried, deliveries came again and were absorbed.
    assert broker_failures() > failures_before
    # A broker away is nobody's event's fault: no row spent any of its attempts on it.
    assert {r.attempts for r in await bus.db.outbox_rows()} == {0}
    assert any(d.redelivered for d in consumer.deliveries)
    assert "duplicate" in consumer.outcomes
    assert await dlq_size(consumer.consumer) == 0


# ---------------------------------------------------------------------------------------------
# 5. two relays on one outbox


class GatedRelay(OutboxRelay):
    """Publishes only while ``gate`` is set; meanwhile its claimed batch (row locks and all) waits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = 0

    async def _publish(self, exchange: AbstractExchange, row: Any) -> bool:
        if not self.gate.is_set():
            self.held += 1
            await self.gate.wait()
        return await super()._publish(exchange, row)


async def test_two_relays_on_one_outbox_publish_every_event_once(bus: Bus) -> None:
    consumer = await bus.consumer("c", prefetch=100)
    _, seen = await bus.probe(THING)
    connection = await bus.connect("relays")

    # Deterministic part: while A holds its claim, B claims only the rows A did not.
    ids = await bus.db.add_events(range(30))
    a = bus.relay(GatedRelay, connection=connection, batch_size=10)
    b = bus.relay(connection=connection, batch_size=100)
    a.gate.clear()
    a_task = asyncio.create_task(a.relay_once())

    async def a_holds_its_claim() -> bool:
        return a.held == 10

    await eventually(a_holds_its_claim, what="relay A holding its batch")
    assert await b.relay_once() == 20
    a.gate.set()
    assert await asyncio.wait_for(a_task, timeout=10) == 10

    # Free-running part: both relays loop over the same table while events keep coming.
    a.batch_size = b.batch_size = 20
    a.poll_interval = b.poll_interval = 0.02
    bus.run_relay(a)
    bus.run_relay(b)
    for chunk in range(9):
        ids += await bus.db.add_events(range(100 + chunk * 30, 100 + chunk * 30 + 30))

    async def all_seen_and_handled() -> bool:
        return len({m.message_id for m in seen}) == len(ids) and len(await bus.db.inbox_ids(consumer.consumer)) == len(
            ids
        )

    await eventually(all_seen_and_handled, within=30, what="all 300 events on the probe and handled")
    wire = Counter(m.message_id for m in seen)
    assert set(wire) == {str(i) for i in ids}
    # At-least-once allows duplicates on the wire; with no fault injected, SKIP LOCKED leaves none.
    assert {k: v for k, v in wire.items() if v > 1} == {}
    counts = await bus.db.effect_counts(consumer.consumer)
    assert set(counts) == set(ids) and set(counts.values()) == {1}

    async def all_marked_sent() -> bool:  # the running relays mark each batch after its confirms
        return all(r.status == "sent" for r in await bus.db.outbox_rows())

    await eventually(all_marked_sent, what="every row marked sent")


# ---------------------------------------------------------------------------------------------
# 6. every event delivered twice


async def test_an_event_delivered_again_is_a_no_op(bus: Bus) -> None:
    consumer = await bus.consumer("c")
    envelope = Envelope.wrap(ThingHappened(n=42), producer=PRODUCER)

    await bus.publish_envelope(envelope)

    async def outcomes(n: int) -> bool:
        return len(consumer.outcomes) == n

    await eventually(lambda: outcomes(1), what="the first delivery handled")
    await bus.publish_envelope(envelope)  # after the first was handled
    await eventually(lambda: outcomes(2), what="the second delivery handled")
    await asyncio.gather(bus.publish_envelope(envelope), bus.publish_envelope(envelope))  # both in flight at once
    await eventually(lambda: outcomes(4), what="the concurrent deliveries handled")

    assert consumer.outcomes[:2] == ["handled", "duplicate"]
    assert consumer.outcomes[2:] == ["duplicate", "duplicate"]
    assert await bus.db.effect_counts(consumer.consumer) == {envelope.event_id: 1}
    assert await bus.db.inbox_ids(consumer.consumer) == [envelope.event_id]
    assert await dlq_size(consumer.consumer) == 0


# ---------------------------------------------------------------------------------------------
# 7. a rolled-back transaction publishes nothing


async def test_outbox_add_in_a_rolled_back_transaction_publishes_nothing(bus: Bus) -> None:
    consumer = await bus.consumer("c")
    _, seen = await bus.probe(THING)
    relay = bus.relay(connection=await bus.connect("relay"))

    with pytest.raises(RuntimeError, match="business rule"):
        async with bus.db.db.unit_of_work() as uow:
            uow.publish(ThingHappened(n=1))
            raise RuntimeError("business rule failed after the event was published")
    assert await bus.db.outbox_rows() == []
    assert await relay.relay_once() == 0

    # A committed event sent after it arrives alone: had the first been published, it would be first.
    [sentinel] = await bus.db.add_events([2])
    assert await relay.relay_once() == 1

    async def sentinel_handled() -> bool:
        return bool(seen) and consumer.outcomes == ["handled"]

    await eventually(sentinel_handled, what="the committed event delivered")
    assert [m.message_id for m in seen] == [str(sentinel)]
    assert await bus.db.effect_counts(consumer.consumer) == {sentinel: 1}


# ---------------------------------------------------------------------------------------------
# 8. unroutable events


async def test_unroutable_events_are_marked_not_retried_and_visible_in_the_backlog(bus: Bus) -> None:
    consumer = await bus.consumer("c")
    relay = bus.relay(connection=await bus.connect("relay"))
    [lost] = await bus.db.add_events([1], NobodyListens)
    [routed] = await bus.db.add_events([2])

    assert await relay.relay_once() == 2
    rows = {r.event_id: r for r in await bus.db.outbox_rows()}
    assert rows[lost].status == "unroutable"
    assert rows[lost].last_error.startswith("no queue bound")
    assert rows[lost].attempts == 0
    assert rows[routed].status == "sent"

    assert await relay.relay_once() == 0, "an unroutable event must not be claimed again"
    backlog = await ops.outbox_backlog(PRODUCER, bus.db.dsn)
    assert backlog["service"] == PRODUCER
    assert (backlog["pending"], backlog["failing"], backlog["parked"], backlog["unroutable"]) == (0, 0, 0, 1)
    assert backlog["oldest_pending_seconds"] is None

    async def routed_handled() -> bool:
        return consumer.outcomes == ["handled"]

    await eventually(routed_handled, what="the routable event in the same batch handled")
    assert await bus.db.effect_counts(consumer.consumer) == {routed: 1}


# ---------------------------------------------------------------------------------------------
# beyond the issue: follow-up events, and a message that keeps killing its consumer


async def test_a_follow_up_event_commits_with_the_handler_or_not_at_all(bus: Bus) -> None:
    calls = 0

    async def publish_follow_up(data: ThingHappened, ctx: EventContext[Behaviour]) -> None:
        nonlocal calls
        calls += 1
        ctx.uow.publish(NobodyListens(n=data.n))
        if calls == 1:
            raise RuntimeError("fails after publishing its follow-up")

    consumer = await bus.consumer("c", handlers={THING: publish_follow_up})
    [event_id] = await bus.db.add_events([5])
    relay = bus.relay(connection=await bus.connect("relay"))
    assert await relay.relay_once() == 1

    async def handled() -> bool:
        return consumer.outcomes == ["raised RuntimeError", "handled"]

    await eventually(handled, what="the event failed once, then handled on retry")
    follow_ups = [r for r in await bus.db.outbox_rows() if r.type == NobodyListens.event_type]
    assert len(follow_ups) == 1, "the failed attempt's follow-up must have rolled back with it"
    follow_up = Envelope.model_validate_json(follow_ups[0].body)
    assert follow_up.causation_id == str(event_id)
    assert follow_up.correlation_id == str(event_id)
    assert follow_ups[0].headers["correlation_id"] == str(event_id)


async def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered_by_the_broker(bus: Bus) -> None:
    """Not a handler error (that is retried by our code) but a consumer that dies mid-message."""
    topology = dataclasses.replace(TOPOLOGY, delivery_limit=1)
    hangs = asyncio.Event()  # never set: the handler hangs until its consumer is stopped

    async def hang(data: ThingHappened, ctx: EventContext[Behaviour]) -> None:
        await hangs.wait()

    envelope = Envelope.wrap(ThingHappened(n=1), producer=PRODUCER)
    deliveries = 0
    for restart in range(5):
        consumer = await bus.consumer("c", handlers={THING: hang}, topology=topology)  # same queue each time
        if restart == 0:
            await bus.publish_envelope(envelope)

        async def delivered_or_dead(c: Any = consumer) -> bool:
            return bool(c.deliveries) or await dlq_size(c.consumer) == 1

        await eventually(delivered_or_dead, what="a (re)delivery or the dead letter")
        if not consumer.deliveries:
            break
        deliveries += 1
        await consumer.stop()  # dies mid-message: the broker takes the message back and counts it
    assert deliveries == 2, "delivery-limit 1: delivered, returned, delivered, returned again: dead-lettered"
    assert await dlq_size(consumer.consumer) == 1
    [summary] = (await ops.dlq_list(AMQP, NAMESPACE, consumer.consumer))["messages"]
    assert summary["event_id"] == str(envelope.event_id)
    assert summary["attempts"] is None
    assert "delivery_limit" in summary["error"]
    assert await bus.db.effect_counts(consumer.consumer) == {}


# ---------------------------------------------------------------------------------------------
# a handler's slow outside read runs before the transaction, and not again for a duplicate


async def test_prefetching_handler_fetches_outside_the_transaction_and_not_for_duplicates(bus: Bus) -> None:
    fetched: list[tuple[int, int]] = []  # (n, pooled connections checked out while fetching)

    async def fetch(data: ThingHappened, deps: Behaviour) -> int:
        pool = bus.db.db.pool
        fetched.append((data.n, pool.get_size() - pool.get_idle_size()))
        return data.n * 10

    async def apply(data: ThingHappened, ctx: EventContext[Behaviour]) -> None:
        assert ctx.prefetched == data.n * 10
        await record_effect(data, ctx)

    consumer = await bus.consumer(
        "c", handlers={ThingHappened.event_type: Prefetching(fetch=fetch, apply=apply)}, prefetch=1
    )
    envelope = Envelope.wrap(ThingHappened(n=7), producer=PRODUCER)
    await bus.publish_envelope(envelope)
    await eventually(lambda: _outcomes(consumer, 1), what="the first delivery handled")
    await bus.publish_envelope(envelope)
    await eventually(lambda: _outcomes(consumer, 2), what="the duplicate seen")

    assert consumer.outcomes == ["handled", "duplicate"]
    assert fetched == [(7, 0)]  # once, and with no connection held while it ran
    assert await bus.db.effect_counts(consumer.consumer) == {envelope.event_id: 1}


async def _outcomes(consumer: Any, n: int) -> bool:
    return len(consumer.outcomes) == n


async def test_publishing_outside_an_open_unit_of_work_is_refused_not_lost(bus: Bus) -> None:
    uow = bus.db.db.unit_of_work()
    with pytest.raises(RuntimeError, match="inside the unit of work"):
        uow.publish(ThingHappened(n=1))
    async with uow:
        uow.publish(ThingHappened(n=2))
    with pytest.raises(RuntimeError, match="inside the unit of work"):
        uow.publish(ThingHappened(n=3))  # after the commit: would never be written
    async with bus.db.db.unit_of_work(readonly=True, isolation="repeatable_read") as ro:
        with pytest.raises(RuntimeError, match="read-only"):
            ro.publish(ThingHappened(n=4))
    [row] = await bus.db.outbox_rows()
    assert Envelope.model_validate_json(row.body).data == {"n": 2}
