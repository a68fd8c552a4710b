"""The bare endpoints: ``python -m bench.bare_app`` (``BARE_PORT``), what the gateway is compared with.

Served exactly as ``shared.serve`` serves a service (uvicorn, one worker, uvloop, httptools, no
access log, ``log_config=None``, the same server keep-alive), with no middleware:

- ``POST /wechat/callbacks/{appid}`` reads the body and answers ``success``: the no-op floor.
- ``POST /bare-store/wechat/callbacks/{appid}`` does the push path's database work and nothing else:
  the one statement that stores a push (``STORE_PUSHES``: replay-store claim, inbound-log row,
  outbox row, relay wake-up) with plain asyncpg on ``BARE_DATABASE_URL`` (a database migrated like
  the gateway's), keyed by the request's nonce and body digest; no signature check, decryption or
  parsing. The difference to the gateway is what the gateway does besides its database work.
- ``GET /bare-me`` reads the bearer (a member id) and does one indexed SELECT for it on
  ``BARE_ME_DATABASE_URL`` (``MEMBER_SQL``), answering the row as JSON: the floor of a ``/me`` that
  needs one read.
- ``GET /internal/members/{member_id}``: the same read answered as identity's member view, and
  ``GET /internal/members/{member_id}/points`` answered as commerce's tier and points, so the
  gateway's ``/api/v1/me`` can be pointed at them (``GATEWAY_IDENTITY_URL``, ``GATEWAY_COMMERCE_URL``):
  what the gateway adds to upstreams that cost one read each.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from services.gateway.pushes.repository import STORE_PUSHES
from shared.http import SERVER_KEEPALIVE

# A text push as the gateway stores it (payload) and publishes it (envelope body, ~600 bytes).
PAYLOAD: dict[str, Any] = {
    "ToUserName": "gh_000000000001",
    "FromUserName": "oBenchUser000000000000000001",
    "CreateTime": 1700000000,
    "MsgType": "text",
    "Content": "bench message from the load test",
    "MsgId": "7000000000000000001",
}
EVENT_BODY = orjson.dumps(
    {
        "event_id": "00000000-0000-0000-0000-000000000000",
        "type": "wechat.oa.text",
        "schema_version": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "producer": "gateway",
        "correlation_id": "0" * 24,
        "causation_id": None,
        "data": {
            "appid": "wx0000000000000001",
            "app_kind": "oa",
            "name": "text",
            "openid": PAYLOAD["FromUserName"],
            "create_time": 1700000000,
            "msg_id": PAYLOAD["MsgId"],
            "dedup_key": "wx0000000000000001:msg:oBenchUser:1700000000:7000000000000000001",
            "push_id": 1,
            "payload": PAYLOAD,
        },
    }
)
MEMBER_SQL = "SELECT id, unionid_known, phone_masked, tier, available, pending FROM bench_members WHERE id = $1::uuid"
HEADERS = {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "correlation_id": "0" * 24}


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
    )


async def _no_reset(conn: asyncpg.Connection) -> None:
    pass


def create_app() -> FastAPI:
    pools: dict[str, asyncpg.Pool] = {}
    ids = itertools.count()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name, var in (("store", "BARE_DATABASE_URL"), ("me", "BARE_ME_DATABASE_URL")):
            if os.environ.get(var):
                pools[name] = await asyncpg.create_pool(
                    os.environ[var], min_size=1, max_size=10, init=_init, reset=_no_reset, statement_cache_size=1024
                )
        if "store" in pools:
            async with pools["store"].acquire() as conn:
                start = int(await conn.fetchval("SELECT nextval('inbound_pushes_id_seq')"))
            nonlocal ids
            ids = itertools.count(start)  # this process's block (the sequence steps by 1000)
        yield
        for pool in pools.values():
            await pool.close()

    app = FastAPI(title="bench bare endpoints", lifespan=lifespan)

    @app.post("/wechat/callbacks/{appid}")
    async def receive(appid: str, request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("success")

    @app.post("/bare-store/wechat/callbacks/{appid}")
    async def store(appid: str, request: Request) -> PlainTextResponse:
        body = await request.body()
        query = request.query_params
        digest = hashlib.sha256(body).hexdigest()
        push_id = next(ids)
        async with pools["store"].acquire() as conn:
            await conn.fetch(
                STORE_PUSHES,
                [appid],
                [query["nonce"][:64]],
                [query["timestamp"]],
                [digest],
                [push_id],
                [f"{appid}:bare:{digest}"],
                ["wechat.oa.text"],
                ["accepted"],
                [PAYLOAD],
                [None],
                [None],
                [push_id],
                [uuid.uuid4()],
                ["wechat.oa.text"],
                [EVENT_BODY],
                [HEADERS],
                # The relay's wake-up: the gateway sends it at most every 20 ms (Outbox.wake_due), which
                # under load is almost never; nothing listens here.
                False,
            )
        return PlainTextResponse("success")

    @app.get("/bare-me")
    async def me(request: Request) -> Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        async with pools["me"].acquire() as conn:
            row = await conn.fetchrow(MEMBER_SQL, bearer)
        return Response(orjson.dumps(dict(row) if row else {}, default=str), media_type="application/json")

    async def member_answer(member_id: str, shape: Callable[[asyncpg.Record], dict[str, Any]]) -> Response:
        """One indexed SELECT, answered in an upstream's shape (404 as the upstreams answer it)."""
        async with pools["me"].acquire() as conn:
            row = await conn.fetchrow(MEMBER_SQL, member_id)
        if row is None:
            return Response(b'{"type":"member-not-found"}', status_code=404, media_type="application/problem+json")
        return Response(orjson.dumps(shape(row)), media_type="application/json")

    @app.get("/internal/members/{member_id}")
    async def member_view(member_id: str) -> Response:
        """Identity's member view (``GATEWAY_IDENTITY_URL``)."""
        return await member_answer(
            member_id,
            lambda row: {
                "member_id": str(row["id"]),
                "unionid_known": row["unionid_known"],
                "phone_masked": row["phone_masked"],
                "identities": [],
                "follows": [],
            },
        )

    @app.get("/internal/members/{member_id}/points")
    async def member_points(member_id: str) -> Response:
        """The same read answered as commerce's points summary (``GATEWAY_COMMERCE_URL``)."""
        return await member_answer(
            member_id,
            lambda row: {
                "tier": row["tier"],
                "points": {"available": row["available"], "pending": row["pending"], "expiring": []},
            },
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=int(os.environ.get("BARE_PORT", "19199")),
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=SERVER_KEEPALIVE,
    )
