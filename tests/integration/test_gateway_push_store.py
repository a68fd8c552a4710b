"""The push store: one statement per push (or per group commit), exact outcomes under concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from services.gateway.pushes.repository import PushIds, PushWriter
from services.gateway.pushes.schemas import PushRecord, Stored
from shared.bus.outbox import Outbox
from shared.db import Database
from shared.events import WeChatPushReceived
from tests.conftest import db_url

pytestmark = pytest.mark.integration

APPID = "wx0000000000000001"
OUTBOX = Outbox("gateway")


def record(push_id: int, key: str, *, nonce: str | None = None, body: bytes = b"body") -> PushRecord:
    payload: dict[str, Any] = {"FromUserName": "o1", "MsgType": "text", "Content": key}
    event = OUTBOX.prepare(
        WeChatPushReceived(
            appid=APPID,
            app_kind="oa",
            name="text",
            openid="o1",
            create_time=1,
            dedup_key=key,
            push_id=push_id,
            payload=payload,
        ),
        event_type="wechat.oa.text",
    )
    return PushRecord(
        appid=APPID,
        nonce=nonce or uuid.uuid4().hex,
        timestamp="1700000000",
        body_sha256=hashlib.sha256(body).hexdigest(),
        push_id=push_id,
        dedup_key=key,
        event_type="wechat.oa.text",
        status="accepted",
        payload=payload,
        raw_body=None,
        error=None,
        event=event,
    )


@pytest.fixture
async def db(clean_databases: dict[str, str]) -> AsyncIterator[Database]:
    database = await Database(db_url("gateway"), producer="gateway", min_size=1, max_size=4).open()
    yield database
    await database.close()


async def rows(sql: str) -> int:
    conn = await asyncpg.connect(db_url("gateway"))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_a_push_is_stored_by_one_statement_with_its_outbox_row(clean_databases: dict[str, str]) -> None:
    single = await Database(db_url("gateway"), producer="gateway", min_size=1, max_size=1).open()
    statements: list[str] = []
    try:
        ids = PushIds(single)
        writer = PushWriter(single)
        await writer.store(record(await ids.take(), "warm"))  # types are looked up once per connection
        async with single.connection() as conn:
            conn.add_query_logger(lambda r: statements.append(r.query))
        outcomes = [await writer.store(record(await ids.take(), f"k{i}")) for i in range(5)]
    finally:
        await single.close()
    assert outcomes == [Stored(genuine=True, fresh=True)] * 5
    assert len(statements) == 5, "one statement per push, ids from the replica's block"
    assert await rows("SELECT count(*) FROM inbound_pushes") == 6
    assert await rows("SELECT count(*) FROM outbox WHERE type = 'wechat.oa.text'") == 6


async def test_push_ids_come_in_blocks_no_two_replicas_share(db: Database) -> None:
    a, b = PushIds(db), PushIds(db)
    taken = [await a.take() for _ in range(3)] + [await b.take() for _ in range(3)]
    assert len(set(taken)) == 6
    assert taken[1] == taken[0] + 1 and taken[4] == taken[3] + 1


async def test_group_commit_answers_each_push_exactly(db: Database) -> None:
    """Concurrent pushes share statements; duplicates among them, a retried signature and a
    forgery each get their own right answer."""
    writer = PushWriter(db, window=0.005, max_batch=8)
    ids = PushIds(db)
    first = record(await ids.take(), "dup-key", nonce="n-shared")
    await writer.store(first)
    batch = [record(await ids.take(), f"new-{i}") for i in range(20)]
    batch += [record(await ids.take(), "dup-key")]  # WeChat's retry: new signature, same push
    batch += [record(await ids.take(), "twin"), record(await ids.take(), "twin")]  # twins in one window
    batch += [record(await ids.take(), "dup-key", nonce="n-shared")]  # the identical request again
    batch += [record(await ids.take(), "forged", nonce="n-shared", body=b"another body")]  # forgery
    outcomes = await asyncio.gather(*(writer.store(r) for r in batch))
    await writer.aclose()
    assert outcomes[:20] == [Stored(True, True)] * 20
    assert outcomes[20] == Stored(True, False)
    assert sorted(o.fresh for o in outcomes[21:23]) == [False, True]
    assert outcomes[23] == Stored(True, False)
    assert outcomes[24] == Stored(False, False)
    assert await rows("SELECT count(*) FROM inbound_pushes") == 22
    assert await rows("SELECT count(*) FROM outbox") == 22
    assert await rows("SELECT count(*) FROM inbound_pushes WHERE dedup_key = 'forged'") == 0


async def test_a_failed_group_commit_fails_every_push_in_it(db: Database) -> None:
    writer = PushWriter(db, window=0.01, max_batch=64)
    ids = PushIds(db)
    good = [record(await ids.take(), f"g{i}") for i in range(5)]
    # A push id already taken makes the whole statement fail (primary key), as a database error would.
    clash = record(good[0].push_id, "clash")
    outcomes = await asyncio.gather(*(writer.store(r) for r in [*good, clash]), return_exceptions=True)
    await writer.aclose()
    assert all(isinstance(o, asyncpg.UniqueViolationError) for o in outcomes), outcomes
    assert await rows("SELECT count(*) FROM inbound_pushes") == 0
    assert await rows("SELECT count(*) FROM push_nonces") == 0
    # The same pushes stored again (WeChat retries them) all go in.
    retried = await asyncio.gather(*(writer.store(r) for r in good))
    assert retried == [Stored(True, True)] * 5
