"""The points rules. Every posting is idempotent by its key (the source's identity + the rule):

* ``order:<order_id>:earn`` — pending points at payment (a gift's at completion, for the giver);
* ``order:<order_id>:settle`` — pending → available when the shop settles the order;
* ``order:<order_id>:reverse:<after_sale_order_id>`` — a refund, in proportion, cumulatively;
* ``redeem:<redemption_id>`` / ``release:<redemption_id>`` — a points-mall redemption and its undo;
* ``checkin:<member_id>:<day>``, ``expire:<lot_id>``, ``merge:<merged>:<survivor>:{out,in}``.

Keys are business identities rather than event ids: a paid order reached through its pay push,
its re-delivery and the reconcile is one ``order:<id>:earn``, whichever event got there first.

Balances: ``available`` = Σ available_delta and ``pending`` = Σ pending_delta over the member's
entries; also ``available`` = Σ remaining of available lots − debt, ``pending`` = Σ remaining of
pending lots. A refund takes back points from the order's lot: unspent ones first, then points
already spent (the member's ``debt``, which makes ``available`` negative by at most what that
order earned); the next points to become available repay the debt first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.commerce.points.repository import Balances, Lot, PointsRepository
from services.commerce.settings import CommerceSettings
from shared.errors import InsufficientPoints
from shared.events.commerce import (
    PointsAvailable,
    PointsEarned,
    PointsExpired,
    PointsExpiring,
    PointsRedeemed,
    PointsReversed,
)
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class Spent:
    entry_id: int
    balances: Balances


def base_points(order_price_fen: int, per_yuan: int) -> int:
    """contracts.md: a base-tier member earns exactly ``order_price // 100 * SIYU_POINTS_PER_YUAN``."""
    return order_price_fen // 100 * per_yuan


def order_points(order_price_fen: int, per_yuan: int, multiplier_pct: int, bonus_pct: int) -> int:
    """The earn rule: base points × tier multiplier, plus a running campaign's bonus on the base."""
    base = base_points(order_price_fen, per_yuan)
    return base * multiplier_pct // 100 + base * bonus_pct // 100


class PointsService:
    def __init__(self, uow: UnitOfWork, settings: CommerceSettings, now: datetime) -> None:
        self.uow = uow
        self.repo = PointsRepository(uow.conn)
        self.settings = settings
        self.now = now

    def _expiry(self, at: datetime) -> datetime:
        return at + timedelta(days=self.settings.points_validity_days)

    # --- earning ----------------------------------------------------------------------------------

    async def earn_pending(self, member_id: str, order_id: str, points: int, *, rule: str) -> int:
        """Pending points for an order (one statement); 0 when posted before or nothing to earn."""
        if points <= 0:
            return 0
        earned = await self.repo.earn_pending(
            member_id, points, rule=rule, order_id=order_id, idem_key=f"order:{order_id}:earn", at=self.now
        )
        if earned is None:
            return 0
        self.uow.publish(
            PointsEarned(
                member_id=member_id,
                entry_id=str(earned.entry_id),
                points=points,
                state="pending",
                rule=rule,
                order_id=order_id,
                available=earned.available,
                pending=earned.pending,
            )
        )
        return points

    async def earn_available(self, member_id: str, points: int, *, rule: str, idem_key: str) -> Balances | None:
        """Points available at once (a check-in, an operator's credit); None when posted before."""
        await self.repo.lock_account(member_id)
        entry_id = await self.repo.insert_entry(
            member_id,
            kind="checkin" if rule == "checkin" else "adjust",
            rule=rule,
            points=points,
            available_delta=points,
            pending_delta=0,
            idem_key=idem_key,
            at=self.now,
        )
        if entry_id is None:
            return None
        balances = await self._add_available_lot(member_id, entry_id, points, rule=rule, order_id=None)
        expires_at = self._expiry(self.now)
        self.uow.publish(
            PointsEarned(
                member_id=member_id,
                entry_id=str(entry_id),
                points=points,
                state="available",
                rule=rule,
                available=balances.available,
                pending=balances.pending,
                expires_at=expires_at,
            )
        )
        return balances

    async def _add_available_lot(
        self, member_id: str, entry_id: int, points: int, *, rule: str, order_id: str | None
    ) -> Balances:
        account = await self.repo.move_balances(member_id)  # locked already: read the debt
        repay = min(points, account.debt)
        await self.repo.insert_lot(
            member_id,
            entry_id=entry_id,
            rule=rule,
            state="available",
            points=points,
            remaining=points - repay,
            debt_repaid=repay,
            at=self.now,
            expires_at=self._expiry(self.now),
            order_id=order_id,
        )
        return await self.repo.move_balances(member_id, available=points, debt=-repay)

    async def _lock_owner(self, order_id: str) -> str | None:
        """Lock the account of whoever holds the order's lots (the buyer, or the survivor of a
        merge). The account is locked before the lots, as every posting does: no deadlocks."""
        while True:
            member_id = await self.repo.lot_owner(order_id)
            if member_id is None:
                return None
            await self.repo.lock_account(member_id)
            if await self.repo.lot_owner(order_id) == member_id:  # not moved by a merge meanwhile
                return member_id

    # --- settlement -------------------------------------------------------------------------------

    async def settle_order(self, order_id: str) -> int:
        """The order settled: its pending points become available. The points moved (0 if none)."""
        member_id = await self._lock_owner(order_id)
        if member_id is None:
            return 0
        if await self.repo.posted(f"order:{order_id}:settle"):
            return 0
        lots = [lot for lot in await self.repo.lots_of_order(order_id) if lot.state == "pending"]
        if not lots:
            return 0
        account = await self.repo.move_balances(member_id)
        debt = account.debt
        moved = sum(lot.remaining for lot in lots)
        expires_at = self._expiry(self.now)
        for lot in lots:
            repay = min(lot.remaining, debt)
            debt -= repay
            lot.remaining -= repay
            lot.debt_repaid += repay
            lot.state, lot.available_at, lot.expires_at = "available", self.now, expires_at
        await self.repo.insert_entry(
            member_id,
            kind="settle",
            rule="order",
            points=0,
            available_delta=moved,
            pending_delta=-moved,
            idem_key=f"order:{order_id}:settle",
            at=self.now,
            order_id=order_id,
            lot_id=lots[0].lot_id,
        )
        await self.repo.save_lots(lots)
        balances = await self.repo.move_balances(
            member_id, available=moved, pending=-moved, debt=-(account.debt - debt)
        )
        if moved:
            self.uow.publish(
                PointsAvailable(
                    member_id=member_id,
                    order_id=order_id,
                    points=moved,
                    expires_at=expires_at,
                    available=balances.available,
                    pending=balances.pending,
                )
            )
        return moved

    # --- refunds ----------------------------------------------------------------------------------

    async def reverse_for_refund(
        self, order_id: str, after_sale_order_id: str, refunded_total_fen: int, order_price_fen: int
    ) -> int:
        """Take back the order's points in proportion to everything refunded so far (cumulative, so
        the sum over refunds is exact and a full refund takes back exactly what was earned).
        Returns the points taken back by this refund; 0 (and nothing posted, so a later call can
        still post it) while the order has earned nothing yet."""
        member_id = await self._lock_owner(order_id)
        if member_id is None:
            return 0
        key = f"order:{order_id}:reverse:{after_sale_order_id}"
        if await self.repo.posted(key):
            return 0
        lots = await self.repo.lots_of_order(order_id)
        earned = sum(lot.points for lot in lots)
        if not lots or earned <= 0 or order_price_fen <= 0:
            return 0
        target = earned * min(refunded_total_fen, order_price_fen) // order_price_fen
        todo = target - sum(lot.reversed for lot in lots)
        if todo <= 0:
            return 0
        from_available = from_pending = clawed = 0
        for lot in lots:
            if todo == 0:
                break
            take = min(todo, lot.remaining)
            lot.remaining -= take
            lot.reversed += take
            todo -= take
            if lot.state == "pending":
                from_pending += take
            else:
                from_available += take
            # Points of this lot already spent: taken back as debt (a negative balance, bounded by
            # what the order earned). Expired points are not taken twice.
            claw = min(todo, lot.spent - lot.clawed)
            if claw > 0:
                lot.clawed += claw
                lot.reversed += claw
                clawed += claw
                todo -= claw
            if lot.remaining == 0 and lot.state == "pending":
                lot.state = "closed"
        total = from_available + from_pending + clawed
        if total == 0:
            return 0
        await self.repo.insert_entry(
            member_id,
            kind="reverse",
            rule="refund",
            points=-total,
            available_delta=-(from_available + clawed),
            pending_delta=-from_pending,
            idem_key=key,
            at=self.now,
            order_id=order_id,
            lot_id=lots[0].lot_id,
            ref=after_sale_order_id,
        )
        await self.repo.save_lots(lots)
        balances = await self.repo.move_balances(
            member_id, available=-(from_available + clawed), pending=-from_pending, debt=clawed
        )
        self.uow.publish(
            PointsReversed(
                member_id=member_id,
                order_id=order_id,
                points=total,
                negative=balances.available < 0,
                available=balances.available,
                pending=balances.pending,
            )
        )
        return total

    # --- spending ---------------------------------------------------------------------------------

    async def spend(self, member_id: str, points: int, *, redemption_id: str) -> Spent:
        """Spend FIFO across lots. The account row is locked first (``lock_account``), so two
        redemptions of one member run one after the other and the second sees the first's balance:
        no double spend. Raises :class:`InsufficientPoints` (nothing written)."""
        account = await self.repo.lock_account(member_id)
        if account.available < points:
            raise InsufficientPoints(f"the reward costs {points} points; {max(account.available, 0)} are available")
        allocations: list[tuple[int, int]] = []
        touched: list[Lot] = []
        todo = points
        for lot in await self.repo.fifo_lots(member_id):
            take = min(todo, lot.remaining)
            lot.remaining -= take
            lot.spent += take
            allocations.append((lot.lot_id, take))
            touched.append(lot)
            todo -= take
            if todo == 0:
                break
        if todo:  # the balance said yes but the lots disagree: the ledger needs reconciling
            raise RuntimeError(f"member {member_id}: available {account.available} but lots hold {points - todo}")
        entry_id = await self.repo.insert_entry(
            member_id,
            kind="redeem",
            rule="redeem",
            points=-points,
            available_delta=-points,
            pending_delta=0,
            idem_key=f"redeem:{redemption_id}",
            at=self.now,
            ref=redemption_id,
        )
        if entry_id is None:
            raise RuntimeError(f"redemption {redemption_id} was spent already")
        await self.repo.insert_allocations(entry_id, allocations)
        await self.repo.save_lots(touched)
        balances = await self.repo.move_balances(member_id, available=-points)
        self.uow.publish(
            PointsRedeemed(
                member_id=member_id,
                entry_id=str(entry_id),
                points=points,
                redemption_id=redemption_id,
                available=balances.available,
                pending=balances.pending,
            )
        )
        return Spent(entry_id, balances)

    async def release(self, member_id: str, redemption_id: str) -> int:
        """Give a failed redemption's points back to the lots they came from. Idempotent."""
        await self.repo.lock_account(member_id)
        spent_entry = await self.repo.entry_id(f"redeem:{redemption_id}")
        if spent_entry is None or await self.repo.posted(f"release:{redemption_id}"):
            return 0
        allocations = dict(await self.repo.allocations(spent_entry))
        lots = await self.repo.lots_by_id(list(allocations))
        for lot in lots:
            lot.remaining += allocations[lot.lot_id]
            lot.spent -= allocations[lot.lot_id]
        points = sum(allocations.values())
        await self.repo.insert_entry(
            member_id,
            kind="release",
            rule="redeem",
            points=points,
            available_delta=points,
            pending_delta=0,
            idem_key=f"release:{redemption_id}",
            at=self.now,
            ref=redemption_id,
        )
        await self.repo.save_lots(lots)
        await self.repo.move_balances(member_id, available=points)
        return points

    # --- expiry -----------------------------------------------------------------------------------

    async def expire_member(self, member_id: str) -> int:
        """Expire the member's lots whose ``expires_at`` is at or before now. The points expired."""
        await self.repo.lock_account(member_id)
        lots = await self.repo.expired_lots_of(member_id, self.now)
        total = 0
        for lot in lots:
            entry_id = await self.repo.insert_entry(
                member_id,
                kind="expire",
                rule="expiry",
                points=-lot.remaining,
                available_delta=-lot.remaining,
                pending_delta=0,
                idem_key=f"expire:{lot.lot_id}",
                at=self.now,
                order_id=lot.order_id,
                lot_id=lot.lot_id,
            )
            if entry_id is None:
                continue
            total += lot.remaining
            lot.expired += lot.remaining
            lot.remaining = 0
            lot.state = "expired"
        if total:
            await self.repo.save_lots(lots)
            balances = await self.repo.move_balances(member_id, available=-total)
            self.uow.publish(
                PointsExpired(
                    member_id=member_id,
                    points=total,
                    expired_at=self.now,
                    available=balances.available,
                    pending=balances.pending,
                )
            )
        return total

    async def announce_expiring(self, limit: int = 500) -> int:
        """One ``commerce.points.expiring`` per member whose points expire within the notice window;
        each lot is announced once. Returns how many members were told."""
        until = self.now + timedelta(days=self.settings.points_notice_days)
        rows = await self.repo.take_expiring(self.now, until, limit)
        for row in rows:
            self.uow.publish(
                PointsExpiring(
                    member_id=row["member_id"],
                    points=int(row["points"]),
                    expires_at=row["expires_at"],
                    available=int(row["available"]),
                )
            )
        return len(rows)

    # --- merges -----------------------------------------------------------------------------------

    async def merge(self, merged_id: str, survivor_id: str) -> int:
        """Move the merged member's lots, balances and debt to the survivor (two entries, one each
        side, so both ledgers still sum to their balances). Idempotent per (merged, survivor)."""
        first, second = sorted((merged_id, survivor_id))  # lock order: no deadlock with a reverse merge
        await self.repo.lock_account(first)
        await self.repo.lock_account(second)
        key = f"merge:{merged_id}:{survivor_id}"
        if await self.repo.posted(f"{key}:out"):
            return 0
        source = await self.repo.move_balances(merged_id)
        for member, sign, side in ((merged_id, -1, "out"), (survivor_id, 1, "in")):
            await self.repo.insert_entry(
                member,
                kind=f"merge_{side}",
                rule="merge",
                points=sign * (source.available + source.pending),
                available_delta=sign * source.available,
                pending_delta=sign * source.pending,
                idem_key=f"{key}:{side}",
                at=self.now,
                ref=merged_id if side == "in" else survivor_id,
            )
        await self.repo.move_lots(merged_id, survivor_id)
        await self.repo.move_balances(
            merged_id, available=-source.available, pending=-source.pending, debt=-source.debt
        )
        await self.repo.move_balances(survivor_id, available=source.available, pending=source.pending, debt=source.debt)
        return source.available + source.pending
