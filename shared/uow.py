"""The unit of work: one connection, one transaction, and the events decided in it.

Every write in Siyu that takes more than one statement happens inside one::

    async with deps.db.unit_of_work() as uow:           # an endpoint
        member = await MemberService(uow).register(...)  # a service decides, repositories write
        # uow.publish(MemberRegistered(...)) was called by the service

    # committed here: the changes and their outbox rows together, or neither

A consumer opens it for each event (with the inbox row in the same transaction) and the events
published in it carry that event as their cause. Services take the unit of work and never commit;
repositories take ``uow.conn`` and are the only code that writes SQL. WeChat is never called inside
one: call it before (a read the decision needs) or after the commit (an effect the decision asked
for), and record the outcome in a second unit of work.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import asyncpg
from asyncpg.pool import PoolAcquireContext
from asyncpg.transaction import Transaction

from shared.bus.outbox import Outbox, OutgoingEvent
from shared.events.envelope import Envelope, EventData
from shared.observability import get_logger

if TYPE_CHECKING:
    from shared.db import Database

log = get_logger(__name__)

Isolation = Literal["read_committed", "repeatable_read", "serializable"]


class UnitOfWork:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        isolation: Isolation = "read_committed",
        readonly: bool = False,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.isolation = isolation
        self.readonly = readonly
        self._events: list[OutgoingEvent] = []
        self._acquire: PoolAcquireContext | None = None
        self._conn: asyncpg.Connection | None = None
        self._tx: Transaction | None = None

    @property
    def conn(self) -> asyncpg.Connection:
        """The transaction's connection: what repositories run their statements on."""
        if self._conn is None:
            raise RuntimeError("the unit of work is not open: use `async with db.unit_of_work() as uow`")
        return self._conn

    def publish(self, data: EventData, *, event_type: str | None = None) -> Envelope:
        """Publish ``data`` if and when this unit of work commits (outbox row in the same transaction)."""
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot publish events")
        if self._tx is None:
            # Outside `async with` the event would never be written: say so instead of losing it.
            raise RuntimeError("publish inside the unit of work (`async with db.unit_of_work() as uow:`)")
        event = self.outbox.prepare(
            data, event_type=event_type, correlation_id=self.correlation_id, causation_id=self.causation_id
        )
        self._events.append(event)
        return event.envelope

    @property
    def published(self) -> list[Envelope]:
        """What this unit of work will publish (or published, after commit)."""
        return [e.envelope for e in self._events]

    async def __aenter__(self) -> UnitOfWork:
        self._acquire = self.db.pool.acquire(timeout=self.db.acquire_timeout)
        self._conn = await self._acquire.__aenter__()
        try:
            self._tx = self._conn.transaction(isolation=self.isolation, readonly=self.readonly)
            await self._tx.start()
        except BaseException:
            await self._release()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tx is not None
        try:
            if exc_type is None:
                await self.outbox.write(self.conn, self._events)
                await self._tx.commit()
            else:
                # The connection may be the thing that failed: a rollback that cannot be sent is
                # the server's rollback anyway (it aborts the transaction when the session drops),
                # and the error that ended the unit of work is the one to raise, whatever this one is.
                with contextlib.suppress(Exception):
                    await self._tx.rollback()
        finally:
            await self._release()

    async def _release(self) -> None:
        acquire, self._acquire, self._conn, self._tx = self._acquire, None, None, None
        if acquire is not None:
            try:
                await acquire.__aexit__(None, None, None)
            except Exception as exc:
                # asyncpg could not reset the connection (it died after the commit or with the
                # error being raised) and has already terminated it. That is no reason to fail a
                # unit of work that committed, or to hide the error that ended one that did not.
                log.warning("db.release_failed", error=repr(exc))
