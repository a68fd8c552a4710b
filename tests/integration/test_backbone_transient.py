"""Transient failures are not the event's fault: the consumer holds the message and pauses.

A dependency that is away — the database unreachable, an upstream answering ``ServiceUnavailable``
— must not push events up the retry ladder to the dead-letter queue. The consumer keeps the
message it holds (unacknowledged, never republished, so its ``x-siyu-attempt`` does not move),
stops taking new ones, says why in ``status`` and in its service's ``/ready``, and carries on when
the dependency is back. The database is taken away from one process with a TCP proxy
(``bus_fixtures.TcpProxy``), never by stopping the shared server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiormq
import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from shared.app import Runtime, create_service_app
from shared.bus import ops
from shared.bus.topology import Topology
from shared.db import Database, is_transient
from shared.errors import BadRequest, ServiceUnavailable
from shared.events.envelope import Envelope
from shared.settings import ServiceSettings, load_settings
from tests.conftest import AMQP, NAMESPACE, PG
from tests.integration.bus_fixtures import (
    PRODUCER,
    TOPOLOGY,
    Behaviour,
    Bus,
    RecordingConsumer,
    ThingHappened,
    bus,
    bus_db,
    bus_events,
    eventually,
    record_effect,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

__all__ = ["bus", "bus_db", "bus_events"]  # fixtures, re-exported for pytest

THING = ThingHappened.event_type


async def ladder_depth(bus: Bus, consumer: str, topology: Topology = TOPOLOGY) -> int:
    """Messages waiting in a consumer's delay queues and dead-letter queue."""
    names = [topology.retry_queue(consumer, a)[0] for a in range(1, len(topology.retry_delays_ms) + 1)]
    return sum([await bus.queue_depth(n) for n in [*names, topology.dlq(consumer)]])


# ---------------------------------------------------------------------------------------------
# what counts as transient


async def test_is_transient_tells_a_dependency_away_from_a_bug() -> None:
    errors: dict[str, BaseException] = {}
    conn = await asyncpg.connect(f"{PG}/postgres")
    for name, query, args in [
        ("bad argument", "SELECT $1::int", ("x",)),
        ("argument count", "SELECT $1::int, $2::int", (1,)),
        ("division by zero", "SELECT 1/0", ()),
        ("unknown column", "SELECT nope", ()),
    ]:
        try:
            await conn.fetch(query, *args)
        except Exception as exc:
            errors[name] = exc
    await conn.close()
    try:
        await conn.fetch("SELECT 1")
    except Exception as exc:
        errors["closed connection"] = exc
    try:
        await asyncpg.connect("postgresql://postgres@127.0.0.1:1/postgres", timeout=5)
    except Exception as exc:
        errors["refused"] = exc
    terminated = await asyncpg.connect(f"{PG}/postgres")
    killer = await asyncpg.connect(f"{PG}/postgres")
    await killer.execute("SELECT pg_terminate_backend($1)", terminated.get_server_pid())

    async def backend_gone() -> bool:
        pid = terminated.get_server_pid()
        return not await killer.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)

    await eventually(backend_gone, what="the terminated backend gone")  # termination is asynchronous
    await killer.close()
    try:
        await terminated.fetch("SELECT 1")
    except Exception as exc:
        errors["backend terminated"] = exc
    terminated.terminate()

    transient = {name for name, exc in errors.items() if is_transient(exc)}
    assert transient == {"closed connection", "refused", "backend terminated"}, errors
    assert is_transient(ServiceUnavailable("WeChat is away"))
    assert is_transient(TimeoutError())
    assert is_transient(aiormq.exceptions.ChannelInvalidStateError("channel closed"))
    # What a connection whose backend was terminated while idle sometimes raises instead of
    # "connection is closed" (about one time in twenty here).
    assert is_transient(
        asyncpg.exceptions.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
    )
    assert not is_transient(BadRequest("no"))
    assert not is_transient(RuntimeError("a bug"))


# ---------------------------------------------------------------------------------------------
# (a) a transient failure holds the message and pauses the consumer


async def test_a_transient_failure_holds_the_message_pauses_and_spends_no_retry(bus: Bus) -> None:
    behaviour = Behaviour(unavailable="the upstream timed out")
    consumer = await bus.consumer("c", deps=behaviour, max_backoff=0.2)
    first, second = (Envelope.wrap(ThingHappened(n=n), producer=PRODUCER) for n in (1, 2))
    await bus.publish_envelope(first)

    async def paused_and_retried() -> bool:
        return consumer.status is not None and len(behaviour.calls) >= 3

    await eventually(paused_and_retried, what="the consumer paused, trying the held message again")
    assert consumer.status is not None
    assert "ServiceUnavailable" in consumer.status and "the upstream timed out" in consumer.status
    # While paused it takes nothing new: the second event waits in the queue.
    await bus.publish_envelope(second)

    async def second_waiting() -> bool:
        return await bus.queue_depth(TOPOLOGY.queue(consumer.consumer)) == 1

    await eventually(second_waiting, what="the second event left in the queue")
    assert await ladder_depth(bus, consumer.consumer) == 0

    behaviour.unavailable = None

    async def both_handled() -> bool:
        return len(await bus.db.effect_counts(consumer.consumer)) == 2

    await eventually(both_handled, what="both events handled once the upstream is back")
    assert consumer.status is None
    assert await bus.db.effect_counts(consumer.consumer) == {first.event_id: 1, second.event_id: 1}
    # One delivery each: the held message was never returned, republished or counted as an attempt.
    assert [d.message_id for d in consumer.deliveries] == [str(first.event_id), str(second.event_id)]
    assert all(d.attempt is None and not d.redelivered for d in consumer.deliveries)
    assert consumer.outcomes.count("raised ServiceUnavailable") >= 2
    assert consumer.outcomes[-2:] == ["handled", "handled"]
    assert await ladder_depth(bus, consumer.consumer) == 0


async def test_a_held_message_that_then_fails_on_its_own_climbs_the_ladder_and_the_consumer_resumes(
    bus: Bus,
) -> None:
    """Once the dependency answers, a failure of the event's own is retried as usual, and the
    consumer takes deliveries again (it used to stay paused for good)."""
    behaviour = Behaviour(unavailable="database maintenance")
    consumer = await bus.consumer("c", deps=behaviour, max_backoff=0.2)
    [held] = [Envelope.wrap(ThingHappened(n=1), producer=PRODUCER)]
    await bus.publish_envelope(held)

    async def paused() -> bool:
        return consumer.status is not None

    await eventually(paused, what="the consumer paused")
    behaviour.unavailable, behaviour.fail = None, "a bug in the handler"

    async def dead_lettered() -> bool:
        return await bus.queue_depth(TOPOLOGY.dlq(consumer.consumer)) == 1

    await eventually(dead_lettered, what="the failing event dead-lettered after its retries")
    assert [d.attempt for d in consumer.deliveries] == [None, 2, 3]
    assert consumer.status is None
    behaviour.fail = None
    later = Envelope.wrap(ThingHappened(n=2), producer=PRODUCER)
    await bus.publish_envelope(later)

    async def later_handled() -> bool:
        return later.event_id in await bus.db.effect_counts(consumer.consumer)

    await eventually(later_handled, what="a later event handled: the consumer resumed")


async def test_a_message_held_past_max_hold_is_returned_and_the_consumer_comes_back_for_it(bus: Bus) -> None:
    behaviour = Behaviour(unavailable="still away")
    consumer = await bus.consumer("c", deps=behaviour, max_backoff=0.1, max_hold=0.5)
    envelope = Envelope.wrap(ThingHappened(n=1), producer=PRODUCER)
    await bus.publish_envelope(envelope)

    async def returned_and_redelivered() -> bool:
        return any(d.redelivered for d in consumer.deliveries)

    await eventually(returned_and_redelivered, what="the held message returned and delivered again")
    behaviour.unavailable = None

    async def handled() -> bool:
        return await bus.db.effect_counts(consumer.consumer) == {envelope.event_id: 1}

    await eventually(handled, what="the event handled once the dependency is back")
    assert all(d.attempt is None for d in consumer.deliveries), "returning is not a retry"
    assert await ladder_depth(bus, consumer.consumer) == 0


# ---------------------------------------------------------------------------------------------
# /ready of a real service says why its consumer is paused


@dataclass
class AppDeps(Behaviour):
    db: Database | None = None


async def _app_deps(rt: Runtime[ServiceSettings]) -> AppDeps:
    return AppDeps(consumer=rt.settings.service_name, db=rt.db)


@pytest.fixture
async def proxied_app(bus: Bus) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Any, Any]]:
    """A service built with ``create_service_app`` whose database and broker are each behind a
    proxy the test can cut."""
    db_proxy, broker_proxy = await bus.proxy(), await bus.proxy(AMQP)
    name = bus.consumer_name("app")
    bus.extra_queues.extend(Topology(namespace=NAMESPACE).queues(name))
    settings = load_settings(
        ServiceSettings,
        service_name=name,
        database_url=db_proxy.dsn(bus.db.name),
        amqp_url=broker_proxy.amqp_url(),
    )
    app = create_service_app(settings, make_deps=_app_deps, subscriptions={THING: record_effect})
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as client:
            yield app, client, db_proxy, broker_proxy


async def test_ready_says_the_consumer_is_paused_while_its_database_is_away(
    bus: Bus, proxied_app: tuple[FastAPI, httpx.AsyncClient, Any, Any]
) -> None:
    app, client, proxy, _ = proxied_app
    deps: AppDeps = app.state.deps
    consumer = app.state.consumer
    topology = Topology(namespace=NAMESPACE)
    assert (await client.get("/ready")).status_code == 200

    proxy.cut()
    envelope = Envelope.wrap(ThingHappened(n=1), producer=PRODUCER)
    await bus.publish_envelope(envelope)

    async def paused() -> bool:
        return consumer.status is not None

    await eventually(paused, what="the consumer paused by the unreachable database")
    answer = await client.get("/ready")
    assert answer.status_code == 503
    reasons = answer.json()["reasons"]
    assert reasons["database"].startswith("unreachable")
    assert reasons["consumer"].startswith("paused since") and "a dependency is unavailable" in reasons["consumer"]
    assert await ladder_depth(bus, deps.consumer, topology) == 0

    proxy.restore()

    async def handled_and_ready() -> bool:
        return (
            await bus.db.effect_counts(deps.consumer) == {envelope.event_id: 1}
            and (await client.get("/ready")).status_code == 200
        )

    await eventually(handled_and_ready, within=30, what="the event handled and /ready 200 after the database returned")
    assert consumer.status is None
    assert await ladder_depth(bus, deps.consumer, topology) == 0


# ---------------------------------------------------------------------------------------------
# (b) the outage: a consumer's database away for 60 s under a steady stream of events

OUTAGE_SECONDS = 60.0  # the number
RATE = 6.0  # events per second, produced the whole time
LEAD_SECONDS = 8.0  # steady flow before the cut and after the restore


@pytest.mark.timeout(300)
async def test_a_consumer_whose_database_is_away_for_60s_under_load_loses_and_dead_letters_nothing(bus: Bus) -> None:
    proxy = await bus.proxy()
    consumer_db = await bus.database(proxy.dsn(bus.db.name), max_size=10)
    consumer: RecordingConsumer = await bus.consumer("c", db=consumer_db, prefetch=16)
    relay = bus.relay(connection=await bus.connect("relay"), poll_interval=0.2)  # the producer's side stays up
    bus.run_relay(relay)

    ids: list[uuid.UUID] = []
    stop = asyncio.Event()

    async def produce() -> None:
        n, next_at = 0, time.monotonic()
        while not stop.is_set():
            ids.extend(await bus.db.add_events([n]))
            n += 1
            next_at += 1 / RATE
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def effects() -> int:
        return sum((await bus.db.effect_counts(consumer.consumer)).values())

    async def ladder_is_empty() -> None:
        assert await ladder_depth(bus, consumer.consumer) == 0, "an event went up the retry ladder"

    producer = asyncio.create_task(produce())
    try:
        await eventually(lambda: _at_least(effects, int(RATE * LEAD_SECONDS)), what="a steady flow before the outage")
        proxy.cut()
        cut_at = time.monotonic()
        handled_at_cut = await effects()

        async def paused() -> bool:
            return consumer.status is not None

        await eventually(paused, what="the consumer paused by its unreachable database")
        # The outage itself: events keep coming; none may move toward the dead-letter queue.
        while (left := OUTAGE_SECONDS - (time.monotonic() - cut_at)) > 0:
            await ladder_is_empty()
            assert consumer.status is not None, "the consumer must stay paused while its database is away"
            await asyncio.sleep(min(2.0, left))
        handled_during = await effects() - handled_at_cut
        proxy.restore()
        restored_at = time.monotonic()
        await eventually(lambda: _at_least(effects, len(ids)), within=60, what="handling to catch up after restore")
        await asyncio.sleep(max(0.0, LEAD_SECONDS - (time.monotonic() - restored_at)))  # keep producing a while
    finally:
        stop.set()
        await asyncio.wait_for(producer, timeout=10)

    async def all_handled() -> bool:
        return len(await bus.db.effect_counts(consumer.consumer)) == len(ids)

    await eventually(all_handled, within=60, what="every event handled after the database returned")
    counts = await bus.db.effect_counts(consumer.consumer)
    assert len(ids) >= RATE * (OUTAGE_SECONDS + LEAD_SECONDS) * 0.8, f"only {len(ids)} events produced"
    assert set(counts) == set(ids), "every event handled"
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    assert sorted(await bus.db.inbox_ids(consumer.consumer)) == sorted(ids)
    # The outage did hit this consumer: connections refused, the consumer paused, almost nothing
    # committed while the proxy was cut (at most what was already on its way at the cut).
    assert proxy.refused > 0
    assert consumer.statuses and all("a dependency is unavailable" in s for s in consumer.statuses)
    assert handled_during <= consumer.prefetch, handled_during
    assert consumer.status is None
    # Nothing dead-lettered, nothing retried: no delivery ever carried an attempt count.
    await ladder_is_empty()
    assert (await ops.dlq_list(AMQP, NAMESPACE, consumer.consumer))["shown"] == 0
    assert {d.attempt for d in consumer.deliveries} == {None}
    raised = {o.removeprefix("raised ") for o in consumer.outcomes if o.startswith("raised")}
    assert raised and "PoisonMessage" not in raised, raised


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def test_an_exhausted_pool_is_a_transient_failure(bus: Bus) -> None:
    """Every pooled connection busy past the acquire timeout: held and retried, not a retry."""
    db = await bus.database(bus.db.dsn, max_size=1, acquire_timeout=0.2)
    consumer = await bus.consumer("c", db=db, max_backoff=0.2)
    envelope = Envelope.wrap(ThingHappened(n=1), producer=PRODUCER)
    async with db.connection():  # the only connection, taken
        await bus.publish_envelope(envelope)

        async def paused() -> bool:
            return consumer.status is not None

        await eventually(paused, what="the consumer paused by the pool timeout")
        assert "TimeoutError" in consumer.status

    async def handled() -> bool:
        return await bus.db.effect_counts(consumer.consumer) == {envelope.event_id: 1}

    await eventually(handled, what="the event handled once a connection is free")
    assert consumer.status is None
    assert [d.attempt for d in consumer.deliveries] == [None]
    assert await ladder_depth(bus, consumer.consumer) == 0


async def test_ready_says_the_broker_is_away(
    bus: Bus, proxied_app: tuple[FastAPI, httpx.AsyncClient, Any, Any]
) -> None:
    """A robust connection that is reconnecting is not "closed": /ready must still see it is down."""
    app, client, _, broker = proxied_app
    assert (await client.get("/ready")).status_code == 200
    broker.cut()

    async def not_ready() -> bool:
        answer = await client.get("/ready")
        return answer.status_code == 503 and answer.json()["reasons"].get("broker") == "not connected"

    await eventually(not_ready, what="/ready 503 naming the broker")
    assert not app.state.connection.is_closed
    broker.restore()

    async def ready_again() -> bool:
        return (await client.get("/ready")).status_code == 200

    await eventually(ready_again, within=30, what="/ready 200 once the broker is back")
    # And the consumer takes events again on the restored connection.
    envelope = Envelope.wrap(ThingHappened(n=1), producer=PRODUCER)
    await bus.publish_envelope(envelope)

    async def handled() -> bool:
        return await bus.db.effect_counts(app.state.deps.consumer) == {envelope.event_id: 1}

    await eventually(handled, within=30, what="an event handled after the broker came back")
