"""``python -m services.commerce.reconcile`` — check that every points balance is the sum of its ledger.

Checks, over the whole ledger in one consistent snapshot:

* each account's ``available`` / ``pending`` equal the sums of its entries' ``available_delta`` /
  ``pending_delta`` (the entries are the truth; the account row is a cache every posting updates);
* each account's ``available`` equals its available lots' remaining points minus its debt, and
  ``pending`` its pending lots' remaining points;
* each lot adds up: points = remaining + spent + expired + (reversed − clawed) + debt repaid.

Prints a summary and every mismatch (JSON lines) and exits 1 when there is any, 0 otherwise.
``--repair`` rewrites mismatched account rows from their entries (never the entries themselves),
under the same lock postings take; lot mismatches are reported for an operator to investigate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from services.commerce.points.repository import PointsRepository
from services.commerce.settings import CommerceSettings
from shared.db import Database
from shared.settings import load_settings


async def check(db: Database) -> tuple[dict[str, int], list[dict[str, Any]], list[dict[str, Any]]]:
    async with db.unit_of_work(isolation="repeatable_read", readonly=True) as uow:
        repo = PointsRepository(uow.conn)
        return await repo.totals(), await repo.account_mismatches(), await repo.lot_mismatches()


async def repair(db: Database, member_ids: list[str]) -> None:
    for member_id in member_ids:
        async with db.unit_of_work() as uow:
            repo = PointsRepository(uow.conn)
            await repo.lock_account(member_id)
            await repo.repair_account(member_id)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.commerce.reconcile", description=__doc__)
    parser.add_argument("--repair", action="store_true", help="rewrite mismatched account rows from the ledger")
    args = parser.parse_args(argv)
    settings = load_settings(CommerceSettings)
    db = Database(settings.database_dsn, producer="commerce-reconcile", max_size=2)
    await db.open()
    try:
        totals, accounts, lots = await check(db)
        if args.repair and accounts:
            await repair(db, [str(a["member_id"]) for a in accounts])
            _, accounts_after, _ = await check(db)
            print(f"repaired {len(accounts) - len(accounts_after)} account(s)")
            accounts = accounts_after
    finally:
        await db.close()
    print(
        f"points ledger: {totals['accounts']} accounts, {totals['entries']} entries, {totals['lots']} lots; "
        f"{len(accounts)} account mismatch(es), {len(lots)} lot mismatch(es)"
    )
    for row in [*({"account": a} for a in accounts), *({"lot": lot} for lot in lots)]:
        print(json.dumps(row, default=str, sort_keys=True))
    return 1 if accounts or lots else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
