"""SQL for the shop callbacks."""

from __future__ import annotations

import uuid

import asyncpg

# A mini-program identity belongs to a live member (merges move it with the tombstone's change).
_MEMBER_OF = "SELECT member_id FROM app_identities WHERE appid = $1 AND openid = $2"


class ShopRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def member_of(self, appid: str, openid: str) -> uuid.UUID | None:
        member_id: uuid.UUID | None = await self.conn.fetchval(_MEMBER_OF, appid, openid)
        return member_id
