"""SQL of the push path: the one statement that stores pushes, push ids in blocks, retention.

A push is stored by ONE statement in autocommit (``Database.connection``): the replay-store claim,
the inbound-log row with its unique de-dup key and its outbox row (with the relay's wake-up), for
one push or a batch of them (group commit, :class:`PushWriter`). Either all of a push's rows are
written or none: a forged signature writes nothing, a duplicate writes nothing new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.gateway.pushes.schemas import PushRecord, Stored
from shared.bus.outbox import NOTIFY_CHANNEL, Outbox
from shared.db import Database, delete_in_batches

# Each nextval of inbound_pushes_id_seq reserves this many ids (migration 0005 sets the
# sequence's step to it): a replica hands them out itself, so a push's event names its id before
# the statement that stores both.
PUSH_ID_BLOCK = 1000

# The replay store's claim is an UPSERT that returns the body the signature was first used for
# (DO UPDATE, not DO NOTHING: it also returns a row a concurrent push inserted meanwhile): the
# same body is WeChat retrying, another body is a forgery and stores nothing. The inbound log's
# unique de-dup key makes a retried push (new signature, same content) a no-op, and only a push
# that was inserted gets its outbox row. pg_notify wakes the relay once the statement commits.
STORE_PUSHES = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
        $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::bytea[], $11::text[]
    ) AS i(appid, nonce, ts, body_sha256, id, dedup_key, event_type, status, payload, raw_body, error)
),
nonce AS (
    INSERT INTO push_nonces AS n (appid, nonce, timestamp, body_sha256)
    SELECT appid, nonce, ts, body_sha256 FROM input
    ON CONFLICT (appid, nonce, timestamp) DO UPDATE SET body_sha256 = n.body_sha256
    RETURNING n.appid, n.nonce, n.timestamp, n.body_sha256
),
verdict AS (
    SELECT i.*, n.body_sha256 = i.body_sha256 AS genuine
    FROM input i JOIN nonce n ON n.appid = i.appid AND n.nonce = i.nonce AND n.timestamp = i.ts
),
push AS (
    INSERT INTO inbound_pushes (id, appid, dedup_key, event_type, status, payload, raw_body, error)
    SELECT id, appid, dedup_key, event_type, status, payload, raw_body, error FROM verdict WHERE genuine
    ON CONFLICT (dedup_key) DO NOTHING
    RETURNING id
),
event AS (
    INSERT INTO outbox (event_id, type, body, headers)
    SELECT e.event_id, e.type, e.body, e.headers
    FROM unnest($12::bigint[], $13::uuid[], $14::text[], $15::bytea[], $16::jsonb[])
        AS e(push_id, event_id, type, body, headers)
    JOIN push ON push.id = e.push_id
    RETURNING 1
),
wake AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE $17 AND EXISTS (SELECT 1 FROM event)
)
SELECT v.id, v.genuine, p.id IS NOT NULL AS fresh, (SELECT count(*) FROM wake) AS woke
FROM verdict v LEFT JOIN push p ON p.id = v.id
"""

_RESERVE_IDS = "SELECT nextval('inbound_pushes_id_seq')"


class PushRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def store(self, records: Sequence[PushRecord], *, wake: bool) -> dict[int, Stored]:
        """Store ``records`` (distinct signatures) in one statement; each one's outcome by push id.

        ``wake``: run ``pg_notify`` for the relay (``Outbox.wake_due``: at most every WAKE_INTERVAL).
        """
        with_events = [r for r in records if r.event is not None]
        event_ids, types, bodies, headers = Outbox.columns([r.event for r in with_events if r.event])
        rows = await self.conn.fetch(
            STORE_PUSHES,
            [r.appid for r in records],
            [r.nonce for r in records],
            [r.timestamp for r in records],
            [r.body_sha256 for r in records],
            [r.push_id for r in records],
            [r.dedup_key for r in records],
            [r.event_type for r in records],
            [r.status for r in records],
            [r.payload for r in records],
            [r.raw_body for r in records],
            [r.error for r in records],
            [r.push_id for r in with_events],
            event_ids,
            types,
            bodies,
            headers,
            wake,
        )
        return {row["id"]: Stored(genuine=row["genuine"], fresh=row["fresh"]) for row in rows}

    async def reserve_ids(self) -> int:
        """The first of ``PUSH_ID_BLOCK`` ids no other replica will use."""
        return int(await self.conn.fetchval(_RESERVE_IDS))


class PushIds:
    """Push ids of this replica: blocks of the sequence, handed out one by one (hi/lo)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._next = 0
        self._end = 0
        self._lock = asyncio.Lock()

    async def take(self) -> int:
        if self._next >= self._end:
            async with self._lock:
                if self._next >= self._end:
                    async with self.db.connection() as conn:
                        start = await PushRepository(conn).reserve_ids()
                    self._next, self._end = start, start + PUSH_ID_BLOCK
        push_id = self._next
        self._next += 1
        return push_id


class PushWriter:
    """Stores pushes: each with its own statement, or (``window`` > 0) in group commits.

    With a window, the first push to arrive opens a batch; pushes arriving within ``window``
    seconds join it (up to ``max_batch``), and the batch is stored by one statement on one
    connection, one commit for all. Each push awaits its own outcome; a batch that fails fails
    every push in it (each answers 503 and WeChat retries it). Two pushes with the same signature
    never share a batch (the replay store's UPSERT may touch a row once per statement): the later
    one waits for the next batch.
    """

    def __init__(self, db: Database, *, window: float = 0.0, max_batch: int = 64) -> None:
        self.db = db
        self.window = window
        self.max_batch = max_batch
        self._queue: list[tuple[PushRecord, asyncio.Future[Stored]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def store(self, record: PushRecord) -> Stored:
        if self.window <= 0:
            async with self.db.connection() as conn:
                return (await PushRepository(conn).store([record], wake=self.db.outbox.wake_due()))[record.push_id]
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.append((record, future))
        if len(self._queue) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch: list[tuple[PushRecord, asyncio.Future[Stored]]] = []
        later: list[tuple[PushRecord, asyncio.Future[Stored]]] = []
        signatures: set[tuple[str, str, str]] = set()
        for item in self._queue:
            record, future = item
            if future.done():  # its request was cancelled (the client hung up): nothing to store
                continue
            signature = (record.appid, record.nonce, record.timestamp)
            if signature in signatures or len(batch) >= self.max_batch:
                later.append(item)
            else:
                signatures.add(signature)
                batch.append(item)
        self._queue = later
        if later:
            self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)
        if batch:
            task = asyncio.create_task(self._write(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _write(self, batch: list[tuple[PushRecord, asyncio.Future[Stored]]]) -> None:
        try:
            async with self.db.connection() as conn:
                outcomes = await PushRepository(conn).store(
                    [record for record, _ in batch], wake=self.db.outbox.wake_due()
                )
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for record, future in batch:
            if not future.done():
                future.set_result(outcomes[record.push_id])

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._queue:
            self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)


_PRUNE_NONCES = "seen_at < $1"
_PRUNE_PUSHES = "received_at < $1"


async def prune_nonces(db: Database, before: datetime) -> int:
    """Replay-store rows seen before ``before`` (walks ix_push_nonces_seen_at)."""
    return await delete_in_batches(db, "push_nonces", _PRUNE_NONCES, before)


async def prune_pushes(db: Database, before: datetime) -> int:
    """Inbound-log rows received before ``before`` (walks ix_inbound_pushes_received_at)."""
    return await delete_in_batches(db, "inbound_pushes", _PRUNE_PUSHES, before)
