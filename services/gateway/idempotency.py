"""``Idempotency-Key`` on the mini-program API's POSTs: the first answer is replayed for 24 h.

The contract (Stripe's, as Novu and the IETF draft state it; domain.md §1.3):

- the key is the client's (1-255 visible ASCII characters), scoped to the caller: a member's keys
  (``member:<id>``) or, before sign-in, the client address's (``ip:<addr>``);
- the first request with a key claims it (``in_flight``, committed before any work starts, so every
  replica sees the claim); a second request with the same key while the first runs gets **409**
  with ``Retry-After``; with a different method, path or body it gets **422**;
- a successful (2xx) answer is stored and replayed, byte for byte with its status, with
  ``Idempotent-Replayed: true``, until the key expires (24 h);
- an error answer is not stored: the claim is released and nothing is left behind, so the client
  may retry with the same key (the operations behind the API are safe to re-run: a used wx.login
  code is refused by WeChat itself);
- a claim whose request died with its replica is taken over once ``locked_until`` has passed.

Whether two requests are "the same" is decided on the validated body (canonical JSON), not on its
bytes: key order and whitespace do not matter, a different value does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio
from fastapi import Response
from prometheus_client import Counter
from pydantic import BaseModel
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.models import IdempotencyRecord
from shared.errors import BadRequest, Conflict, Unprocessable
from shared.observability import get_logger

log = get_logger(__name__)

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_STORED_HEADERS = ("content-type", "location")

OUTCOMES = Counter("siyu_gateway_idempotency_total", "Idempotency-Key outcomes", ["outcome"])


class InvalidIdempotencyKey(BadRequest):
    type_slug = "invalid-idempotency-key"
    title = "Invalid Idempotency-Key"


class IdempotencyKeyInFlight(Conflict):
    type_slug = "idempotency-key-in-flight"
    title = "Request with this Idempotency-Key in progress"


class IdempotencyKeyReused(Unprocessable):
    type_slug = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


def validate_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not _KEY.match(raw):
        raise InvalidIdempotencyKey("Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID v4 is ideal)")
    return raw


def fingerprint(method: str, path: str, body: BaseModel | None) -> str:
    canonical = json.dumps(
        body.model_dump(mode="json") if body is not None else None, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(f"{method.upper()}\n{path}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    id: int
    owner: uuid.UUID


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def response(self) -> Response:
        return Response(content=self.body, status_code=self.status, headers={**self.headers, REPLAYED_HEADER: "true"})


class IdempotencyStore:
    """The ``idempotency_keys`` table. Each step is its own short transaction: a claim must be
    visible to the other replicas before the work starts, and must not hold a lock while it runs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl_seconds: int, lock_seconds: int) -> None:
        self.sessions = sessions
        self.ttl = timedelta(seconds=ttl_seconds)
        self.lock = timedelta(seconds=lock_seconds)

    async def claim(self, scope: str, key: str, request_hash: str) -> Claim | StoredAnswer:
        """Claim the key for this request, or return the stored answer to replay; raises 409/422."""
        owner = uuid.uuid4()
        insert = pg_insert(IdempotencyRecord).values(
            scope=scope,
            key=key,
            request_hash=request_hash,
            status="in_flight",
            owner=owner,
            locked_until=func.now() + self.lock,
            expires_at=func.now() + self.ttl,
        )
        excluded = insert.excluded
        current = IdempotencyRecord.__table__.c
        stmt = insert.on_conflict_do_update(
            index_elements=["scope", "key"],
            set_={
                "request_hash": excluded.request_hash,
                "status": "in_flight",
                "owner": excluded.owner,
                "response_status": None,
                "response_headers": None,
                "response_body": None,
                "created_at": func.now(),
                "locked_until": excluded.locked_until,
                "expires_at": excluded.expires_at,
            },
            # An expired key is free again; a claim abandoned by a dead request may be taken over.
            where=(current.expires_at <= func.now())
            | (
                (current.status == "in_flight")
                & (current.locked_until <= func.now())
                & (current.request_hash == excluded.request_hash)
            ),
        ).returning(IdempotencyRecord.id)
        for _ in range(3):
            async with self.sessions() as session, session.begin():
                claimed = await session.scalar(stmt)
                if claimed is not None:
                    return Claim(claimed, owner)
                row = (
                    await session.execute(
                        select(IdempotencyRecord).where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                    )
                ).scalar_one_or_none()
            if row is None:
                continue  # released between the two statements: try to claim again
            if row.request_hash != request_hash:
                OUTCOMES.labels("reused").inc()
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used for a different request; use a new key for a new request"
                )
            if row.status != "done" or row.response_status is None or row.response_body is None:
                OUTCOMES.labels("in_flight").inc()
                raise IdempotencyKeyInFlight(
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                    headers={"Retry-After": "1"},
                )
            OUTCOMES.labels("replayed").inc()
            return StoredAnswer(row.response_status, dict(row.response_headers or {}), row.response_body)
        raise IdempotencyKeyInFlight(
            "a request with this Idempotency-Key is still being processed; retry shortly", headers={"Retry-After": "1"}
        )

    async def complete(self, claim: Claim, response: Response, replay_for: timedelta | None = None) -> None:
        headers = {h: response.headers[h] for h in _STORED_HEADERS if h in response.headers}
        expiry = {"expires_at": func.now() + replay_for} if replay_for is not None else {}
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.id == claim.id, IdempotencyRecord.owner == claim.owner)
                .values(
                    status="done",
                    response_status=response.status_code,
                    response_headers=headers,
                    response_body=bytes(response.body),
                    locked_until=func.now(),
                    **expiry,
                )
            )

    async def release(self, claim: Claim) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.id == claim.id, IdempotencyRecord.owner == claim.owner
                )
            )

    async def prune(self) -> int:
        async with self.sessions() as session, session.begin():
            result = await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < func.now()))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def run(
        self,
        scope: str,
        key: str | None,
        request_hash: str,
        operation: Callable[[], Awaitable[Response]],
        *,
        replay_for: timedelta | None = None,
    ) -> Response:
        """Run ``operation`` at most once per (scope, key); without a key, just run it.

        ``replay_for`` shortens how long the stored answer is replayed (default: the store's TTL).
        """
        if key is None:
            return await operation()
        outcome = await self.claim(scope, key, request_hash)
        if isinstance(outcome, StoredAnswer):
            return outcome.response()
        try:
            response = await operation()
        except BaseException:
            # Shielded: a client that hangs up cancels the request, not the release of its claim.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self.release(outcome)
            raise
        try:
            with anyio.CancelScope(shield=True):
                if 200 <= response.status_code < 300:
                    await self.complete(outcome, response, replay_for)
                    OUTCOMES.labels("stored").inc()
                else:
                    await self.release(outcome)
        except Exception as exc:
            # The work is done and its answer goes out; the claim stays in flight until its lock
            # expires, after which a retry runs the operation again.
            log.error("idempotency.store_failed", error=repr(exc))
        return response
