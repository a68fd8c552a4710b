"""SQL for phone numbers (one statement per method)."""

from __future__ import annotations

import uuid

import asyncpg

_HOLDER = "SELECT member_id FROM phones WHERE e164 = $1"
_DELETE_OF = "DELETE FROM phones WHERE member_id = $1"
_INSERT = """
INSERT INTO phones (e164, member_id, country_code, national_number, masked, appid) VALUES ($1, $2, $3, $4, $5, $6)
"""


class PhoneRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def holder(self, e164: str) -> uuid.UUID | None:
        member_id: uuid.UUID | None = await self.conn.fetchval(_HOLDER, e164)
        return member_id

    async def delete_of(self, member_id: uuid.UUID) -> None:
        await self.conn.execute(_DELETE_OF, member_id)

    async def insert(
        self, e164: str, member_id: uuid.UUID, *, country_code: str, national_number: str, masked: str, appid: str
    ) -> None:
        await self.conn.execute(_INSERT, e164, member_id, country_code, national_number, masked, appid)
