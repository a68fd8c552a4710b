"""SQL of the reply rules notify publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

RULE_SET = "passive"

# Publish only a set whose content differs from the last one published (two replicas starting
# with the same file: the second finds it published and does nothing).
_PUBLISH = """
INSERT INTO published_reply_rules AS r (name, version, rules, published_at) VALUES ($1, $2, $3, now())
ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, rules = EXCLUDED.rules, published_at = now()
WHERE r.version <> EXCLUDED.version
RETURNING published_at
"""


class PublishedRulesRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def publish(self, version: str, rules: dict[str, Any]) -> datetime | None:
        """Record ``version`` as published; when it was, or None when it already was the current one."""
        published_at: datetime | None = await self.conn.fetchval(_PUBLISH, RULE_SET, version, rules)
        return published_at
