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
bytes: key order and whitespace do not matter, a different value does. Each step is one statement
in autocommit: a claim must be visible to the other replicas before the work starts, and no lock
is held while it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
from fastapi import Response
from prometheus_client import Counter
from pydantic import BaseModel

from services.gateway.idempotency.repository import IdempotencyRepository, prune_expired_keys
from services.gateway.idempotency.schemas import Claim, KeyHeld, StoredAnswer
from shared.db import Database
from shared.errors import BadRequest, Conflict, Unprocessable
from shared.observability import get_logger
from shared.periodic import run_every

if TYPE_CHECKING:
    from services.gateway.deps import GatewayDeps

log = get_logger(__name__)

KEY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_STORED_HEADERS = ("content-type", "location")
CLAIM_ATTEMPTS = 3

OUTCOMES = Counter("siyu_gateway_idempotency_total", "Idempotency-Key outcomes", ["outcome"])


class InvalidIdempotencyKey(BadRequest):
    type_slug = "invalid-idempotency-key"
    title = "Invalid Idempotency-Key"


class IdempotencyKeyInFlight(Conflict):
    type_slug = "idempotency-key-in-flight"
    title = "Request with this Idempotency-Key in progress"

    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )


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


class IdempotencyStore:
    def __init__(self, db: Database, *, ttl_seconds: int, lock_seconds: int) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.lock_seconds = lock_seconds

    async def claim(self, scope: str, key: str, request_hash: str) -> Claim | StoredAnswer:
        """Claim the key for this request, or the stored answer to replay; raises 409/422."""
        for _ in range(CLAIM_ATTEMPTS):
            async with self.db.connection() as conn:
                outcome = await IdempotencyRepository(conn).claim(
                    scope, key, request_hash, lock_seconds=self.lock_seconds, ttl_seconds=self.ttl_seconds
                )
            if outcome is None:
                continue  # claimed or released concurrently: look again
            if isinstance(outcome, KeyHeld):
                if outcome.reused:
                    OUTCOMES.labels("reused").inc()
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was already used for a different request; "
                        "use a new key for a new request"
                    )
                OUTCOMES.labels("in_flight").inc()
                raise IdempotencyKeyInFlight()
            if isinstance(outcome, StoredAnswer):
                OUTCOMES.labels("replayed").inc()
            return outcome
        raise IdempotencyKeyInFlight()

    async def complete(self, claim: Claim, response: Response, replay_for: timedelta | None = None) -> None:
        headers = {h: response.headers[h] for h in _STORED_HEADERS if h in response.headers}
        async with self.db.connection() as conn:
            await IdempotencyRepository(conn).complete(
                claim,
                response.status_code,
                headers,
                bytes(response.body),
                replay_for.total_seconds() if replay_for is not None else None,
            )

    async def release(self, claim: Claim) -> None:
        async with self.db.connection() as conn:
            await IdempotencyRepository(conn).release(claim)

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


async def prune_idempotency_keys(db: Database) -> int:
    """Keys past their horizon: a stored answer is replayed 24 h (a sign-in's 5 min), the claim of
    a dead request is taken over after its lock; after ``expires_at`` the key is free again anyway."""
    return await prune_expired_keys(db)


JANITOR_INTERVAL_SECONDS = 600


async def idempotency_janitor(deps: GatewayDeps) -> None:
    async def once() -> dict[str, int]:
        return {"idempotency_keys": await prune_idempotency_keys(deps.db)}

    await run_every(JANITOR_INTERVAL_SECONDS, once, "janitor.idempotency_keys_pruned")
