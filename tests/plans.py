"""What PostgreSQL plans for a statement: the retention and lookup tests check that it uses an index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


async def plan_scans(conn: asyncpg.Connection, sql: str, *args: Any) -> list[tuple[str, str | None, str | None]]:
    """(node type, relation, index) of every scan in the statement's plan."""
    raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in _plan_nodes(plan)
        if "Scan" in n["Node Type"]
    ]
