"""SQL of the points ledger (one statement per method).

Locking: every posting that reads a balance or a lot first locks the member's account row
(``lock_account``), so a member's postings run one after another and lots are only touched under
that lock. The one exception is :meth:`PointsRepository.earn_pending`, the hot path of a paid
order: it is one statement that reads nothing it writes (a new pending lot, the account's pending
sum), so it needs no prior lock; its account upsert still waits for a concurrent holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# Idempotent by idem_key: a duplicate inserts nothing and returns no row. The account upsert only
# runs when the entry was new (it selects FROM entry).
_EARN_PENDING = """
WITH entry AS (
    INSERT INTO points_entries (member_id, kind, rule, points, available_delta, pending_delta, order_id, idem_key,
                                created_at)
    VALUES ($1, 'earn', $3, $2, 0, $2, $4, $5, $6)
    ON CONFLICT (idem_key) DO NOTHING
    RETURNING entry_id
), lot AS (
    INSERT INTO points_lots (member_id, entry_id, order_id, rule, state, points, remaining, earned_at)
    SELECT $1, entry_id, $4, $3, 'pending', $2, $2, $6 FROM entry
    RETURNING lot_id
), account AS (
    INSERT INTO points_accounts AS a (member_id, pending) SELECT $1, $2 FROM entry
    ON CONFLICT (member_id) DO UPDATE SET pending = a.pending + EXCLUDED.pending, updated_at = now()
    RETURNING available, pending
)
SELECT entry.entry_id, lot.lot_id, account.available, account.pending FROM entry, lot, account
"""

_LOCK_ACCOUNT = """
INSERT INTO points_accounts AS a (member_id) VALUES ($1)
ON CONFLICT (member_id) DO UPDATE SET member_id = a.member_id
RETURNING available, pending, debt
"""

_ENTRY_EXISTS = "SELECT entry_id FROM points_entries WHERE idem_key = $1"

_INSERT_ENTRY = """
INSERT INTO points_entries (member_id, kind, rule, points, available_delta, pending_delta, order_id, lot_id, ref,
                            idem_key, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (idem_key) DO NOTHING
RETURNING entry_id
"""

_INSERT_LOT = """
INSERT INTO points_lots (member_id, entry_id, order_id, rule, state, points, remaining, debt_repaid, earned_at,
                         available_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING lot_id
"""

_MOVE_BALANCES = """
UPDATE points_accounts SET available = available + $2, pending = pending + $3, debt = debt + $4, updated_at = now()
WHERE member_id = $1
RETURNING available, pending, debt
"""

_LOT_COLUMNS = (
    "lot_id, member_id, entry_id, order_id, rule, state, points, remaining, spent, expired, reversed, clawed, "
    "debt_repaid, earned_at, available_at, expires_at"
)

_LOTS_OF_ORDER = f"SELECT {_LOT_COLUMNS} FROM points_lots WHERE order_id = $1 ORDER BY lot_id FOR UPDATE"

# FIFO: the lot that expires first is spent first; lots without expiry last; then oldest first.
_FIFO_LOTS = f"""
SELECT {_LOT_COLUMNS} FROM points_lots
WHERE member_id = $1 AND state = 'available' AND remaining > 0
ORDER BY expires_at NULLS LAST, lot_id
FOR UPDATE
"""

_LOTS_BY_ID = f"SELECT {_LOT_COLUMNS} FROM points_lots WHERE lot_id = ANY($1::bigint[]) ORDER BY lot_id FOR UPDATE"

_EXPIRED_LOTS_OF = f"""
SELECT {_LOT_COLUMNS} FROM points_lots
WHERE member_id = $1 AND state = 'available' AND remaining > 0 AND expires_at <= $2
ORDER BY expires_at, lot_id
FOR UPDATE
"""

_SAVE_LOTS = """
UPDATE points_lots AS l SET
    state = u.state, remaining = u.remaining, spent = u.spent, expired = u.expired, reversed = u.reversed,
    clawed = u.clawed, debt_repaid = u.debt_repaid, available_at = u.available_at, expires_at = u.expires_at
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
            $8::bigint[], $9::timestamptz[], $10::timestamptz[])
    AS u(lot_id, state, remaining, spent, expired, reversed, clawed, debt_repaid, available_at, expires_at)
WHERE l.lot_id = u.lot_id
"""

_INSERT_ALLOCATIONS = """
INSERT INTO points_allocations (entry_id, lot_id, points)
SELECT $1, lot_id, points FROM unnest($2::bigint[], $3::bigint[]) AS u(lot_id, points)
"""

_ALLOCATIONS = "SELECT lot_id, points FROM points_allocations WHERE entry_id = $1 ORDER BY lot_id"

_MEMBERS_WITH_EXPIRED_LOTS = """
SELECT DISTINCT member_id FROM points_lots
WHERE state = 'available' AND remaining > 0 AND expires_at <= $1
LIMIT $2
"""

# One row per member with points expiring in (now, until] that were not announced yet; marks them.
_TAKE_EXPIRING = """
WITH due AS (
    SELECT lot_id, member_id, remaining, expires_at FROM points_lots
    WHERE state = 'available' AND remaining > 0 AND notified_at IS NULL AND expires_at > $1 AND expires_at <= $2
    ORDER BY expires_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE points_lots l SET notified_at = $1 FROM due WHERE l.lot_id = due.lot_id
)
SELECT due.member_id, sum(due.remaining)::bigint AS points, min(due.expires_at) AS expires_at,
       coalesce(a.available, 0) AS available
FROM due LEFT JOIN points_accounts a ON a.member_id = due.member_id
GROUP BY due.member_id, a.available
"""

# The /me points summary in one statement: balances and the lots expiring within the notice window.
_SUMMARY = """
SELECT coalesce(a.available, 0) AS available, coalesce(a.pending, 0) AS pending,
       coalesce((
           SELECT json_agg(json_build_object('points', e.points, 'expires_at', e.expires_at) ORDER BY e.expires_at)
           FROM (SELECT sum(remaining)::bigint AS points, expires_at FROM points_lots
                 WHERE member_id = $1 AND state = 'available' AND remaining > 0
                   AND expires_at > $2 AND expires_at <= $3
                 GROUP BY expires_at) e
       ), '[]'::json) AS expiring
FROM (SELECT 1) one LEFT JOIN points_accounts a ON a.member_id = $1
"""

# Newest first; what a member sees: settle entries only move points between buckets and are
# hidden, an earn entry shows its lot's state now (pending, available, expired, reversed).
_LEDGER = """
SELECT e.entry_id, e.kind, e.points, e.order_id, e.created_at, e.available_delta, e.pending_delta,
       l.state AS lot_state, l.remaining AS lot_remaining, l.reversed AS lot_reversed, l.points AS lot_points
FROM points_entries e LEFT JOIN points_lots l ON l.entry_id = e.entry_id
WHERE e.member_id = $1 AND e.kind <> 'settle' AND ($2::bigint IS NULL OR e.entry_id < $2)
ORDER BY e.entry_id DESC
LIMIT $3
"""

_ORDER_POINTS = """
SELECT coalesce(sum(points), 0)::bigint FROM points_entries
WHERE order_id = $1 AND kind IN ('earn', 'reverse')
"""

_LOT_OWNER = "SELECT member_id FROM points_lots WHERE order_id = $1 ORDER BY lot_id LIMIT 1"

_CAMPAIGN_BONUS = """
SELECT coalesce(max(bonus_pct), 0) FROM points_campaigns WHERE starts_at <= $1 AND ends_at > $1
"""

_CREATE_CAMPAIGN = """
INSERT INTO points_campaigns (campaign_id, name, bonus_pct, starts_at, ends_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (campaign_id) DO NOTHING
RETURNING campaign_id
"""

_MOVE_LOTS = "UPDATE points_lots SET member_id = $2 WHERE member_id = $1"

# The reconciliation: every account whose balances are not the sums of its ledger and its lots,
# and every lot whose own arithmetic does not add up.
_ACCOUNT_MISMATCHES = """
WITH ledger AS (
    SELECT member_id, sum(available_delta)::bigint AS available, sum(pending_delta)::bigint AS pending
    FROM points_entries GROUP BY member_id
), lots AS (
    SELECT member_id,
           coalesce(sum(remaining) FILTER (WHERE state = 'available'), 0)::bigint AS available,
           coalesce(sum(remaining) FILTER (WHERE state = 'pending'), 0)::bigint AS pending
    FROM points_lots GROUP BY member_id
)
SELECT coalesce(a.member_id, l.member_id) AS member_id,
       a.available, a.pending, a.debt,
       l.available AS ledger_available, l.pending AS ledger_pending,
       coalesce(t.available, 0) AS lots_available, coalesce(t.pending, 0) AS lots_pending
FROM points_accounts a
FULL JOIN ledger l ON l.member_id = a.member_id
LEFT JOIN lots t ON t.member_id = coalesce(a.member_id, l.member_id)
WHERE a.member_id IS NULL OR l.member_id IS NULL AND (a.available <> 0 OR a.pending <> 0)
   OR a.available <> l.available OR a.pending <> l.pending
   OR a.available <> coalesce(t.available, 0) - a.debt OR a.pending <> coalesce(t.pending, 0)
ORDER BY 1
"""

_LOT_MISMATCHES = """
SELECT lot_id, member_id, points, remaining, spent, expired, reversed, clawed, debt_repaid
FROM points_lots
WHERE points <> remaining + spent + expired + (reversed - clawed) + debt_repaid
   OR spent < 0 OR expired < 0 OR reversed < clawed OR clawed < 0
ORDER BY lot_id
"""

# The reconciliation's repair: the account row rewritten from its entries (never the entries).
_REPAIR_ACCOUNT = """
UPDATE points_accounts a SET available = s.available, pending = s.pending,
    debt = greatest(0, coalesce((SELECT sum(remaining) FROM points_lots l
                                 WHERE l.member_id = a.member_id AND l.state = 'available'), 0) - s.available),
    updated_at = now()
FROM (SELECT member_id, sum(available_delta) AS available, sum(pending_delta) AS pending
      FROM points_entries WHERE member_id = $1 GROUP BY member_id) s
WHERE a.member_id = s.member_id
"""

_TOTALS = """
SELECT (SELECT count(*) FROM points_accounts) AS accounts, (SELECT count(*) FROM points_entries) AS entries,
       (SELECT count(*) FROM points_lots) AS lots
"""


@dataclass
class Lot:
    lot_id: int
    member_id: str
    entry_id: int
    order_id: str | None
    rule: str
    state: str
    points: int
    remaining: int
    spent: int
    expired: int
    reversed: int
    clawed: int
    debt_repaid: int
    earned_at: datetime
    available_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Lot:
        return cls(**dict(row))


@dataclass(frozen=True)
class Balances:
    available: int
    pending: int
    debt: int


@dataclass(frozen=True)
class Earned:
    entry_id: int
    lot_id: int
    available: int
    pending: int


class PointsRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def earn_pending(
        self, member_id: str, points: int, *, rule: str, order_id: str, idem_key: str, at: datetime
    ) -> Earned | None:
        """Post pending points and their lot; None when ``idem_key`` was posted already."""
        row = await self.conn.fetchrow(_EARN_PENDING, member_id, points, rule, order_id, idem_key, at)
        return Earned(row["entry_id"], row["lot_id"], row["available"], row["pending"]) if row else None

    async def repair_account(self, member_id: str) -> None:
        """Rewrite the account row from its entries (the caller holds the account lock)."""
        await self.conn.execute(_REPAIR_ACCOUNT, member_id)

    async def lock_account(self, member_id: str) -> Balances:
        """Create the account if needed and lock it until the transaction ends."""
        row = await self.conn.fetchrow(_LOCK_ACCOUNT, member_id)
        return Balances(row["available"], row["pending"], row["debt"])

    async def posted(self, idem_key: str) -> bool:
        return await self.conn.fetchval(_ENTRY_EXISTS, idem_key) is not None

    async def insert_entry(
        self,
        member_id: str,
        *,
        kind: str,
        rule: str,
        points: int,
        available_delta: int,
        pending_delta: int,
        idem_key: str,
        at: datetime,
        order_id: str | None = None,
        lot_id: int | None = None,
        ref: str | None = None,
    ) -> int | None:
        """The entry's id, or None when ``idem_key`` was posted already."""
        entry_id = await self.conn.fetchval(
            _INSERT_ENTRY,
            member_id,
            kind,
            rule,
            points,
            available_delta,
            pending_delta,
            order_id,
            lot_id,
            ref,
            idem_key,
            at,
        )
        return int(entry_id) if entry_id is not None else None

    async def insert_lot(
        self,
        member_id: str,
        *,
        entry_id: int,
        rule: str,
        state: str,
        points: int,
        remaining: int,
        debt_repaid: int,
        at: datetime,
        expires_at: datetime | None,
        order_id: str | None = None,
    ) -> int:
        available_at = at if state == "available" else None
        return int(
            await self.conn.fetchval(
                _INSERT_LOT,
                member_id,
                entry_id,
                order_id,
                rule,
                state,
                points,
                remaining,
                debt_repaid,
                at,
                available_at,
                expires_at,
            )
        )

    async def move_balances(self, member_id: str, *, available: int = 0, pending: int = 0, debt: int = 0) -> Balances:
        row = await self.conn.fetchrow(_MOVE_BALANCES, member_id, available, pending, debt)
        return Balances(row["available"], row["pending"], row["debt"])

    async def lots_of_order(self, order_id: str) -> list[Lot]:
        return [Lot.of(r) for r in await self.conn.fetch(_LOTS_OF_ORDER, order_id)]

    async def fifo_lots(self, member_id: str) -> list[Lot]:
        return [Lot.of(r) for r in await self.conn.fetch(_FIFO_LOTS, member_id)]

    async def lots_by_id(self, lot_ids: list[int]) -> list[Lot]:
        return [Lot.of(r) for r in await self.conn.fetch(_LOTS_BY_ID, lot_ids)]

    async def expired_lots_of(self, member_id: str, now: datetime) -> list[Lot]:
        return [Lot.of(r) for r in await self.conn.fetch(_EXPIRED_LOTS_OF, member_id, now)]

    async def save_lots(self, lots: list[Lot]) -> None:
        if not lots:
            return
        await self.conn.execute(
            _SAVE_LOTS,
            [lot.lot_id for lot in lots],
            [lot.state for lot in lots],
            [lot.remaining for lot in lots],
            [lot.spent for lot in lots],
            [lot.expired for lot in lots],
            [lot.reversed for lot in lots],
            [lot.clawed for lot in lots],
            [lot.debt_repaid for lot in lots],
            [lot.available_at for lot in lots],
            [lot.expires_at for lot in lots],
        )

    async def insert_allocations(self, entry_id: int, allocations: list[tuple[int, int]]) -> None:
        await self.conn.execute(
            _INSERT_ALLOCATIONS, entry_id, [lot_id for lot_id, _ in allocations], [p for _, p in allocations]
        )

    async def allocations(self, entry_id: int) -> list[tuple[int, int]]:
        return [(r["lot_id"], r["points"]) for r in await self.conn.fetch(_ALLOCATIONS, entry_id)]

    async def entry_id(self, idem_key: str) -> int | None:
        value = await self.conn.fetchval(_ENTRY_EXISTS, idem_key)
        return int(value) if value is not None else None

    async def members_with_expired_lots(self, now: datetime, limit: int) -> list[str]:
        return [r["member_id"] for r in await self.conn.fetch(_MEMBERS_WITH_EXPIRED_LOTS, now, limit)]

    async def take_expiring(self, now: datetime, until: datetime, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_TAKE_EXPIRING, now, until, limit))

    async def summary(self, member_id: str, now: datetime, until: datetime) -> asyncpg.Record:
        row: asyncpg.Record = await self.conn.fetchrow(_SUMMARY, member_id, now, until)
        return row

    async def ledger(self, member_id: str, before: int | None, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(_LEDGER, member_id, before, limit))

    async def order_points(self, order_id: str) -> int:
        return int(await self.conn.fetchval(_ORDER_POINTS, order_id))

    async def lot_owner(self, order_id: str) -> str | None:
        value = await self.conn.fetchval(_LOT_OWNER, order_id)
        return str(value) if value is not None else None

    async def campaign_bonus(self, at: datetime) -> int:
        return int(await self.conn.fetchval(_CAMPAIGN_BONUS, at))

    async def create_campaign(
        self, campaign_id: str, name: str, bonus_pct: int, starts_at: datetime, ends_at: datetime
    ) -> bool:
        return await self.conn.fetchval(_CREATE_CAMPAIGN, campaign_id, name, bonus_pct, starts_at, ends_at) is not None

    async def move_lots(self, from_member: str, to_member: str) -> None:
        await self.conn.execute(_MOVE_LOTS, from_member, to_member)

    async def account_mismatches(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(_ACCOUNT_MISMATCHES)]

    async def lot_mismatches(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(_LOT_MISMATCHES)]

    async def totals(self) -> dict[str, int]:
        return dict(await self.conn.fetchrow(_TOTALS))
