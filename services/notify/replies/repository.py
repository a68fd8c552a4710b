"""SQL of the reply rules notify publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

RULE_SET = "passive"

# Every publication is recorded; the gateway keeps the newest and ignores a version it holds.
_PUBLISH = """
INSERT INTO published_reply_rules AS r (name, version, rules, published_at) VALUES ($1, $2, $3, now())
ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, rules = EXCLUDED.rules, published_at = now()
RETURNING published_at
"""


class PublishedRulesRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def publish(self, version: str, rules: dict[str, Any]) -> datetime:
        """Record ``version`` as published now; when."""
        published_at: datetime = await self.conn.fetchval(_PUBLISH, RULE_SET, version, rules)
        return published_at
