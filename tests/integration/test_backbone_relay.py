"""The outbox relay's failure handling, and the operator's view of the outbox (``siyuctl outbox``).

* An event no queue takes is a FAILURE when some service consumes its type (its queue is missing or
  unbound): it stays pending with backoff and is parked after ``max_attempts``; for a type nobody
  consumes it is ``unroutable`` (``test_backbone.py``).
* Claims and backoff run on the database's clock.
* The relay outlives its database being away.
* Parked rows show in the metrics and in ``siyuctl outbox``; ``siyuctl outbox retry`` re-queues them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from services.relay import RelaySettings, health_app
from shared.bus import ops
from shared.bus.relay import BrokerUnavailable, OutboxRelay
from shared.db import Database
from shared.settings import load_settings
from tests.conftest import AMQP, db_url
from tests.integration.bus_fixtures import (
    PRODUCER,
    Bus,
    NobodyListens,
    ThingHappened,
    bus,
    bus_db,
    bus_events,
    eventually,
    record_effect,
)
from tools import siyuctl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

__all__ = ["bus", "bus_db", "bus_events"]  # fixtures, re-exported for pytest

THING = ThingHappened.event_type
ORPHAN = NobodyListens.event_type  # consumed "by manifest" below, yet no queue is bound to it


class SlowBackoff(OutboxRelay):
    """The real relay with a fixed one-minute backoff, so a failed row is certainly not due yet."""

    def backoff(self, attempts: int) -> float:
        return 60.0


async def make_due(bus: Bus) -> None:
    """Let the backoff pass, by the database's clock."""
    async with bus.db.db.connection() as conn:
        await conn.execute("UPDATE outbox SET available_at = now() WHERE status = 'pending'")


def parked_gauge() -> float | None:
    return REGISTRY.get_sample_value("siyu_outbox_parked", {"producer": PRODUCER})


async def test_unroutable_for_a_consumed_type_backs_off_parks_and_is_retried_by_the_operator(bus: Bus) -> None:
    relay = bus.relay(SlowBackoff, connection=await bus.connect("relay"), consumed_types={ORPHAN}, max_attempts=3)
    [event_id] = await bus.db.add_events([1], NobodyListens)

    for attempt in (1, 2):
        assert await relay.relay_once() == 1
        [row] = await bus.db.outbox_rows()
        assert (row.status, row.attempts) == ("pending", attempt)
        assert "a service consumes this type" in row.last_error
        assert not row.due, "backed off: not due by the database's clock"
        assert 0 < await bus.db.sql("SELECT extract(epoch FROM available_at - now()) FROM outbox") <= 60
        assert await relay.relay_once() == 0, "a row in backoff is not claimed"
        await make_due(bus)

    assert await relay.relay_once() == 1
    [row] = await bus.db.outbox_rows()
    assert (row.status, row.attempts) == ("parked", 3)
    await make_due(bus)
    assert await relay.relay_once() == 0, "a parked row is never claimed"

    # Visible to operators: the metric, the backlog, the parked listing.
    assert await relay.counts() == {"pending": 0, "parked": 1}
    assert parked_gauge() == 1
    backlog = await ops.outbox_backlog(PRODUCER, bus.db.dsn)
    assert (backlog["pending"], backlog["failing"], backlog["parked"], backlog["unroutable"]) == (0, 0, 1, 0)
    assert "a service consumes this type" in backlog["last_error"]
    [parked] = await ops.outbox_parked(bus.db.dsn)
    assert (parked["id"], parked["event_id"], parked["type"], parked["attempts"]) == (row.id, event_id, ORPHAN, 3)
    assert "is the topology declared?" in parked["last_error"]

    # The cause fixed (a consumer's queue now bound to the type), the operator re-queues it.
    consumer = await bus.consumer("c", handlers={ORPHAN: record_effect})
    assert await ops.outbox_retry(bus.db.dsn, [row.id + 1000]) == 0, "an id that is not parked is left alone"
    assert await ops.outbox_retry(bus.db.dsn, [row.id]) == 1
    [row] = await bus.db.outbox_rows()
    assert (row.status, row.attempts, row.due) == ("pending", 0, True)
    assert await relay.relay_once() == 1
    [row] = await bus.db.outbox_rows()
    assert row.status == "sent"

    async def handled() -> bool:
        return await bus.db.effect_counts(consumer.consumer) == {event_id: 1}

    await eventually(handled, what="the re-queued event handled")
    assert await relay.counts() == {"pending": 0, "parked": 0}
    assert parked_gauge() == 0


async def test_an_unconsumed_type_nobody_takes_is_unroutable_at_once(bus: Bus) -> None:
    relay = bus.relay(connection=await bus.connect("relay"), consumed_types={THING}, max_attempts=3)
    await bus.db.add_events([1], NobodyListens)
    assert await relay.relay_once() == 1
    [row] = await bus.db.outbox_rows()
    assert (row.status, row.attempts) == ("unroutable", 0)


async def test_claims_and_backoff_use_the_database_clock(bus: Bus) -> None:
    relay = bus.relay(connection=await bus.connect("relay"))
    _, seen = await bus.probe(THING)
    [later, now] = await bus.db.add_events([1, 2])
    async with bus.db.db.connection() as conn:
        # Due in an hour by the database's clock, whatever the relay's host believes.
        await conn.execute("UPDATE outbox SET available_at = now() + interval '1 hour' WHERE event_id = $1", later)
    assert await relay.relay_once() == 1
    rows = {r.event_id: r for r in await bus.db.outbox_rows()}
    assert rows[now].status == "sent" and rows[later].status == "pending"
    assert await relay.relay_once() == 0
    async with bus.db.db.connection() as conn:
        await conn.execute("UPDATE outbox SET available_at = now() - interval '1 second' WHERE event_id = $1", later)
    assert await relay.relay_once() == 1

    async def both_published() -> bool:
        return [m.message_id for m in seen] == [str(now), str(later)]

    await eventually(both_published, what="both events on the wire, the held one last")


def test_backoff_grows_and_is_capped() -> None:
    relay = OutboxRelay.__new__(OutboxRelay)
    relay.max_backoff = 300.0
    assert max(relay.backoff(1) for _ in range(50)) <= 1.5
    assert min(relay.backoff(5) for _ in range(50)) >= 8.0
    assert max(relay.backoff(40) for _ in range(50)) <= 450.0


async def test_the_relay_outlives_its_database_going_away(bus: Bus) -> None:
    proxy = await bus.proxy()
    relay_db = await bus.database(proxy.dsn(bus.db.name), max_size=2)
    relay = bus.relay(connection=await bus.connect("relay"), db=relay_db, poll_interval=0.2, max_backoff=1.0)
    _, seen = await bus.probe(THING)
    bus.run_relay(relay)
    before = await bus.db.add_events(range(5))

    async def seen_ids(ids: list[uuid.UUID]) -> bool:
        return {str(i) for i in ids} <= {m.message_id for m in seen}

    await eventually(lambda: seen_ids(before), what="events published before the outage")
    assert relay.listening
    proxy.cut()
    during = await bus.db.add_events(range(5, 10))  # committed by the producer; the relay cannot see them

    async def not_listening() -> bool:
        return not relay.listening and not relay.healthy

    await eventually(not_listening, what="the relay noticing its database is away")
    assert not (await seen_ids(during))
    # From here on only a NOTIFY (its LISTEN connection, which must come back too) wakes it promptly.
    relay.poll_interval = 600
    proxy.restore()
    after = await bus.db.add_events(range(10, 15))
    await eventually(lambda: seen_ids(during + after), within=30, what="everything published after the restore")

    async def all_sent() -> bool:
        return relay.healthy and {r.status for r in await bus.db.outbox_rows()} == {"sent"}

    await eventually(all_sent, what="every row marked sent by a healthy relay")
    assert {r.attempts for r in await bus.db.outbox_rows()} == {0}, "the database away is no row's failure"
    woken = await bus.db.add_events([15])
    await eventually(lambda: seen_ids(woken), what="a later event published, woken by NOTIFY")
    assert proxy.refused > 0


# ---------------------------------------------------------------------------------------------
# siyuctl outbox against a service's real (test) database


async def _seed_outbox(service: str) -> dict[str, int]:
    """One row of each state in ``service``'s outbox; returns ids by name."""
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    rows = [
        ("old-pending", "pending", 0, None, hour_ago),
        ("failing", "pending", 2, "broker said no", datetime.now(UTC)),
        ("parked-a", "parked", 12, "unroutable, but a service consumes this type", hour_ago),
        ("parked-b", "parked", 12, "PRECONDITION_FAILED", hour_ago),
        ("unroutable", "unroutable", 0, "no queue bound", hour_ago),
        ("sent", "sent", 0, None, hour_ago),
    ]
    conn = await asyncpg.connect(db_url(service))
    try:
        ids = {}
        for name, status, attempts, error, created in rows:
            ids[name] = await conn.fetchval(
                "INSERT INTO outbox (event_id, type, body, status, attempts, last_error, created_at) "
                "VALUES ($1, $2, '{}', $3, $4, $5, $6) RETURNING id",
                uuid.uuid4(),
                f"test.{name}",
                status,
                attempts,
                error,
                created,
            )
        return ids
    finally:
        await conn.close()


async def siyuctl_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """Run the operator command as an operator would (its own event loop, in a thread)."""
    capsys.readouterr()
    code = await asyncio.to_thread(siyuctl.main, list(argv))
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else out.err


async def test_siyuctl_outbox_shows_retries_and_lists_parked_rows(
    clean_databases: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await _seed_outbox("notify")

    code, summary = await siyuctl_json(capsys, "outbox")
    assert code == 0
    by_service = {row["service"]: row for row in summary}
    assert set(by_service) == {"gateway", "identity", "commerce", "notify"}
    notify = by_service["notify"]
    assert (notify["pending"], notify["failing"], notify["parked"], notify["unroutable"]) == (2, 1, 2, 1)
    assert 3500 < notify["oldest_pending_seconds"] < 7200  # the pending row an hour old
    assert by_service["identity"]["parked"] == 0 and by_service["identity"]["oldest_pending_seconds"] is None

    code, parked = await siyuctl_json(capsys, "outbox", "parked", "notify")
    assert code == 0
    [listing] = parked
    assert [(r["id"], r["type"], r["attempts"]) for r in listing["parked"]] == [
        (ids["parked-a"], "test.parked-a", 12),
        (ids["parked-b"], "test.parked-b", 12),
    ]
    assert listing["parked"][1]["last_error"] == "PRECONDITION_FAILED"

    code, err = await siyuctl_json(capsys, "outbox", "retry", "notify")
    assert code == 2 and "--id N" in err, "retry must say which rows"
    code, retried = await siyuctl_json(capsys, "outbox", "retry", "notify", "--id", str(ids["parked-b"]))
    assert (code, retried) == (0, {"service": "notify", "retried": 1})
    code, retried = await siyuctl_json(capsys, "outbox", "retry", "notify", "--all")
    assert (code, retried) == (0, {"service": "notify", "retried": 1})
    assert (await ops.outbox_parked(db_url("notify"))) == []

    conn = await asyncpg.connect(db_url("notify"))
    try:
        rows = {
            r["id"]: (r["status"], r["attempts"], r["due"])
            for r in await conn.fetch("SELECT id, status, attempts, available_at <= now() AS due FROM outbox")
        }
    finally:
        await conn.close()
    assert rows[ids["parked-a"]] == rows[ids["parked-b"]] == ("pending", 0, True)
    assert rows[ids["unroutable"]][0] == "unroutable" and rows[ids["sent"]][0] == "sent"


# ---------------------------------------------------------------------------------------------
# the relay process (python -m services.relay)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(90)
async def test_the_relay_process_publishes_answers_ready_and_stops_cleanly(
    clean_databases: dict[str, str], event_probe: Any, bus_events: None
) -> None:
    port = _free_port()
    env = {**os.environ, "RELAY_PORT": str(port), "SIYU_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.relay", "notify", env=env)
    db = await Database(db_url("notify"), producer="notify").open()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/ready")).status_code == 200
                except httpx.TransportError:
                    assert process.returncode is None, "the relay process exited"
                    return False

            await eventually(ready, within=30, what="the relay process ready")
            async with db.unit_of_work() as uow:
                event_id = uow.publish(ThingHappened(n=1)).event_id
            received: list[str | None] = []

            async def published() -> bool:
                message = await event_probe.get(fail=False, no_ack=True)
                if message is not None:
                    received.append(message.message_id)
                return str(event_id) in received

            await eventually(published, what="the event published by the relay process")
            async with db.connection() as conn:
                assert await conn.fetchval("SELECT status FROM outbox WHERE event_id = $1", event_id) in (
                    "pending",  # published, the mark not yet committed
                    "sent",
                )

            async def counted() -> bool:  # after the mark committed
                return 'siyu_outbox_published_total{producer="notify"} 1.0' in (await client.get("/metrics")).text

            await eventually(counted, what="the publish counted in /metrics")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await db.close()


async def test_a_broker_away_costs_no_attempt_and_holds_no_claim(bus: Bus) -> None:
    proxy = await bus.proxy(AMQP)
    connection = await bus.connect("relay", reconnect_interval=0.5, url=proxy.amqp_url())
    relay = bus.relay(connection=connection, publish_timeout=1.0, poll_interval=0.2, max_backoff=1.0)
    _, seen = await bus.probe(THING)
    await bus.db.add_events([0])
    assert await relay.relay_once() == 1  # the channel is open: a running relay's steady state
    proxy.cut()

    async def disconnected() -> bool:
        return not connection.connected.is_set()

    await eventually(disconnected, what="the relay's broker connection lost")
    assert not connection.is_closed, "a robust connection is not 'closed' while it reconnects: /ready must not ask that"
    ids = await bus.db.add_events(range(1, 6))
    with pytest.raises(BrokerUnavailable):
        await relay.relay_once()
    rows = await bus.db.outbox_rows()
    assert [(r.status, r.attempts) for r in rows[1:]] == [("pending", 0)] * 5, "nobody's failure: no attempt spent"
    assert not await bus.db.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'", bus.db.name
    ), "no claim is held while the broker is away"

    bus.run_relay(relay)

    async def failing() -> bool:
        return relay.last_error is not None and "BrokerUnavailable" in relay.last_error

    await eventually(failing, what="the running relay saying the broker is away")
    # The relay process's /ready says so.
    health = health_app([relay], [bus.db.db], load_settings(RelaySettings))
    health.state.connection = connection
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=health), base_url="http://relay.test") as client:
        answer = await client.get("/ready")
        assert answer.status_code == 503
        assert answer.json()["reasons"]["broker"] == "not connected"
        assert "BrokerUnavailable" in answer.json()["reasons"][PRODUCER]
        proxy.restore()

        async def all_published() -> bool:
            return {str(i) for i in ids} <= {m.message_id for m in seen}

        await eventually(all_published, within=30, what="the events published once the broker is back")

        async def ready() -> bool:
            return (await client.get("/ready")).status_code == 200

        await eventually(ready, what="the relay ready again")
    assert {r.attempts for r in await bus.db.outbox_rows()} == {0}


async def test_a_commit_that_skipped_its_wake_up_is_relayed_within_the_active_window(bus: Bus) -> None:
    """Producers notify at most every WAKE_INTERVAL (NOTIFY serialises commits server-wide); the
    relay keeps polling after a wake, so the events in between are not left for the next poll."""
    _, seen = await bus.probe(THING)
    relay = bus.relay(connection=await bus.connect("relay"), poll_interval=30.0, linger=0.0)
    outbox = bus.db.db.outbox
    saved = outbox.wake_interval
    # The next write wakes the relay; every later one within a minute does not.
    outbox.wake_interval, outbox._last_wake = 60.0, -1e9
    try:
        bus.run_relay(relay)
        await eventually(lambda: _is(relay.listening), what="the relay listening")
        first = await bus.db.add_events([1])
        await eventually(lambda: _is(len(seen) >= 1), within=2.0, what="the first, notified event published")
        assert not outbox.wake_due(), "the second write must go without its own pg_notify"
        quiet = await bus.db.add_events([2])  # after the relay's claim: only its active window finds it
        await eventually(
            lambda: _is(len(seen) >= 2), within=2.0, what="both events published long before the 30 s poll"
        )
    finally:
        outbox.wake_interval = saved
    assert {m.message_id for m in seen} == {str(first[0]), str(quiet[0])}


async def _is(value: bool) -> bool:
    return value
