"""SQL of the gateway's copy of notify's reply rules (one row per rule set)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

RULE_SET = "passive"

# Events may arrive out of order (a retry overtaken by a newer set): the newest by notify's clock wins.
_STORE = """
INSERT INTO reply_rules AS r (name, version, rules, published_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET
    version = EXCLUDED.version, rules = EXCLUDED.rules, published_at = EXCLUDED.published_at, stored_at = now()
WHERE r.published_at < EXCLUDED.published_at
RETURNING version
"""
_VERSION = "SELECT version FROM reply_rules WHERE name = $1"
_LOAD = "SELECT version, rules FROM reply_rules WHERE name = $1"


class ReplyRulesRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def store(self, version: str, rules: dict[str, Any], published_at: datetime) -> bool:
        """Keep this set if it is newer than the one kept; True when it was kept."""
        return await self.conn.fetchval(_STORE, RULE_SET, version, rules, published_at) is not None

    async def version(self) -> str | None:
        value = await self.conn.fetchval(_VERSION, RULE_SET)
        return str(value) if value is not None else None

    async def load(self) -> tuple[str, dict[str, Any]] | None:
        row = await self.conn.fetchrow(_LOAD, RULE_SET)
        return (str(row["version"]), row["rules"]) if row is not None else None
