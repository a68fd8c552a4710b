"""The inbound log: a verified push and its outbox row, stored in one transaction, once."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.models import InboundPush
from shared.bus.outbox import Outbox
from shared.events import WeChatPushReceived

_NAME_UNSAFE = re.compile(r"[^a-z0-9_]+")
INBOUND = InboundPush.__table__
MAX_KEY = 200  # fits the column with room; longer keys (a VIEW event's long URL) are hashed


def storage_key(dedup_key: str) -> str:
    """The de-dup key as stored: itself when short, else a digest (still unique, still exact)."""
    if len(dedup_key) <= MAX_KEY:
        return dedup_key
    return "sha256:" + hashlib.sha256(dedup_key.encode()).hexdigest()


def event_name(raw: str) -> str:
    """A routing-key-safe name: lower case, ``[a-z0-9_]`` only (unknown types are kept, not rejected)."""
    return (_NAME_UNSAFE.sub("_", raw.lower()).strip("_") or "unknown")[:80]


class InboundLog:
    def __init__(self, session: AsyncSession, outbox: Outbox) -> None:
        self.session = session
        self.outbox = outbox

    async def record(
        self,
        *,
        appid: str,
        app_kind: str,
        name: str,
        dedup_key: str,
        openid: str | None,
        create_time: int,
        msg_id: str | None,
        payload: dict[str, Any],
        status: str = "accepted",
        error: str | None = None,
        raw_body: bytes | None = None,
    ) -> int | None:
        """Store the push and publish its event: its id, or None when already stored (a duplicate)."""
        event_type = f"wechat.{app_kind}.{name}"
        push_id = await self.session.scalar(
            # Core, not the ORM entity: the hot path of every push (ORM-enabled INSERT costs more CPU).
            pg_insert(INBOUND)
            .values(
                appid=appid,
                dedup_key=storage_key(dedup_key),
                event_type=event_type,
                status=status,
                payload=payload,
                raw_body=raw_body,
                error=error,
            )
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(INBOUND.c.id)
        )
        if push_id is None:
            return None
        if status == "accepted":
            await self.outbox.add(
                self.session,
                WeChatPushReceived(
                    appid=appid,
                    app_kind=app_kind,
                    name=name,
                    openid=openid,
                    create_time=create_time,
                    msg_id=msg_id,
                    dedup_key=dedup_key,
                    push_id=push_id,
                    payload=payload,
                ),
                event_type=event_type,
            )
        return int(push_id)
