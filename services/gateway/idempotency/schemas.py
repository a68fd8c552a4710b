"""A claim on an Idempotency-Key, and an answer stored for replay."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi import Response

REPLAYED_HEADER = "Idempotent-Replayed"


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


@dataclass(frozen=True)
class KeyHeld:
    """The key belongs to another request: ``reused`` when it was for a different one, else it is
    still running."""

    reused: bool
