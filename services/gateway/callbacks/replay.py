"""Timestamp window and replay store for signed pushes."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.models import PushNonce
from shared.wechat.crypto import InvalidSignature

NONCES = PushNonce.__table__  # Core, not the ORM entity, on the hot path of every push


def check_window(timestamp: str, window_seconds: int, now: float | None = None) -> None:
    """Reject a push signed too long ago or too far ahead (clock skew counts both ways)."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise InvalidSignature("timestamp is not a unix time")
    skew = abs((now or time.time()) - int(timestamp))
    if skew > window_seconds:
        raise InvalidSignature(f"timestamp outside the {window_seconds} s window (replayed or clock skew)")


async def check_replay(session: AsyncSession, appid: str, timestamp: str, nonce: str, body_sha256: str) -> bool:
    """Record this signature's body; True for a first sight, False for a retry of the same body.

    Runs in the push's own transaction, so a rejected push leaves no row behind.
    """
    inserted = await session.scalar(
        pg_insert(NONCES)
        .values(appid=appid, nonce=nonce[:64], timestamp=timestamp, body_sha256=body_sha256)
        .on_conflict_do_nothing()
        .returning(NONCES.c.appid)
    )
    if inserted is not None:
        return True
    seen = await session.scalar(
        select(NONCES.c.body_sha256).where(
            NONCES.c.appid == appid, NONCES.c.nonce == nonce[:64], NONCES.c.timestamp == timestamp
        )
    )
    if seen != body_sha256:
        raise InvalidSignature("this signature was already used for a different body (forged or replayed push)")
    return False
