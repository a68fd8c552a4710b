"""Redeeming a reward: reserve (points and stock, one unit of work), fulfil, then commit — or
release both on failure.

* Double spend: the points are taken by :meth:`PointsService.spend`, which locks the member's
  account row before reading the balance (``INSERT .. ON CONFLICT DO UPDATE`` takes the row lock):
  concurrent redemptions of one member queue on that row and each sees the balance the previous one
  left. A row lock rather than a bare conditional ``UPDATE .. WHERE available >= cost`` because the
  same transaction must also pick the FIFO lots and write the allocation consistently with it.
* Overselling: stock is taken with a conditional ``UPDATE .. WHERE remaining > 0``.
* Replays: one redemption per (member, ``Idempotency-Key``); the same key answers the first
  redemption again (and finishes it if it was interrupted); the key with another reward is 422.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.commerce.coupons.service import CouponService
from services.commerce.points.service import PointsService
from services.commerce.rewards.repository import RewardRepository
from services.commerce.rewards.schemas import Fulfilment, NewReward, RedeemedCoupon, RedemptionAnswer
from services.commerce.settings import CommerceSettings
from shared.errors import Conflict, RedemptionFailed, RewardNotFound, SoldOut, Unprocessable
from shared.events.commerce import RewardRedeemed
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class Reservation:
    fulfilment: Fulfilment
    state: str
    answer: RedemptionAnswer | None  # set when the redemption is committed already (a replay)
    failure: str | None = None


def _answer(row: asyncpg.Record) -> RedemptionAnswer:
    coupon = None
    if row["coupon_id"]:
        coupon = RedeemedCoupon(
            coupon_id=row["coupon_id"], title=row["coupon_title"], expires_at=row["coupon_expires_at"]
        )
    return RedemptionAnswer(redemption_id=row["redemption_id"], points_spent=row["points"], coupon=coupon)


class RewardService:
    def __init__(self, uow: UnitOfWork, settings: CommerceSettings, now: datetime) -> None:
        self.uow = uow
        self.repo = RewardRepository(uow.conn)
        self.settings = settings
        self.now = now

    async def create(self, body: NewReward) -> None:
        coupon = body.coupon.model_dump(exclude_none=True) if body.coupon else None
        if not await self.repo.create(body.reward_id, body.title, body.kind, body.cost_points, body.stock, coupon):
            raise Conflict(f"reward {body.reward_id} exists")

    async def reserve(self, member_id: str, reward_id: str, key: str) -> Reservation:
        existing = await self.repo.by_key(member_id, key)
        if existing is None:
            reward = await self.repo.reward(reward_id)
            if reward is None or not reward["active"]:
                raise RewardNotFound(f"no reward {reward_id} in the points mall")
            redemption_id = f"rd-{uuid.uuid4().hex[:24]}"
            if await self.repo.open(redemption_id, member_id, reward_id, key, reward["cost_points"]):
                return await self._reserve_new(redemption_id, member_id, reward_id)
            existing = await self.repo.by_key(member_id, key)  # a concurrent request with the same key won
            assert existing is not None
        if existing["reward_id"] != reward_id:
            raise Unprocessable("this Idempotency-Key was used for another reward")
        fulfilment = Fulfilment(
            existing["redemption_id"], member_id, existing["reward_id"], existing["kind"], existing["points"]
        )
        answer = _answer(existing) if existing["state"] == "committed" else None
        return Reservation(fulfilment, existing["state"], answer, existing["failure"])

    async def _reserve_new(self, redemption_id: str, member_id: str, reward_id: str) -> Reservation:
        reward = await self.repo.take_stock(reward_id)
        if reward is None:
            raise SoldOut(f"reward {reward_id} is sold out")  # the unit of work rolls back: nothing written
        cost = int(reward["cost_points"])
        await self.repo.set_points(redemption_id, cost)
        await PointsService(self.uow, self.settings, self.now).spend(member_id, cost, redemption_id=redemption_id)
        return Reservation(Fulfilment(redemption_id, member_id, reward_id, reward["kind"], cost), "reserved", None)

    async def fulfil_and_commit(self, f: Fulfilment) -> RedemptionAnswer:
        """Issue what the reward gives (a coupon; a product is shipped by the brand from the record)
        and commit. Idempotent: a coupon is claimed by ``reward:<redemption_id>``."""
        reward = await self.repo.reward(f.reward_id)
        assert reward is not None
        coupon: RedeemedCoupon | None = None
        if f.kind == "coupon":
            spec: dict[str, Any] = reward["coupon"] or {}
            claim = f"reward:{f.redemption_id}"
            await CouponService(self.uow, self.settings, self.now).issue(
                f.member_id,
                kind="reward",
                title=reward["title"],
                discount_fen=int(spec.get("discount_fen", 0)),
                min_spend_fen=int(spec.get("min_spend_fen", 0)),
                validity_days=int(spec.get("validity_days", 30)),
                claim_key=claim,
                shop_coupon_id=spec.get("shop_coupon_id"),
            )
            row = await self.repo.coupon_by_claim(claim)
            assert row is not None
            coupon = RedeemedCoupon(coupon_id=row["coupon_id"], title=row["title"], expires_at=row["expires_at"])
        if await self.repo.commit(f.redemption_id, coupon.coupon_id if coupon else None):
            self.uow.publish(
                RewardRedeemed(
                    member_id=f.member_id,
                    redemption_id=f.redemption_id,
                    reward_id=f.reward_id,
                    title=reward["title"],
                    kind=f.kind,
                    points_spent=f.points,
                    coupon_id=coupon.coupon_id if coupon else None,
                )
            )
            return RedemptionAnswer(redemption_id=f.redemption_id, points_spent=f.points, coupon=coupon)
        # Released meanwhile (it went stale): its points are back, so this attempt failed.
        raise RedemptionFailed(f"redemption {f.redemption_id} was released before it could be fulfilled")

    async def release(self, redemption_id: str, failure: str) -> bool:
        """Stock back, then points back (the reserve's lock order). False if it was not reserved."""
        row = await self.repo.release(redemption_id, failure)
        if row is None:
            return False
        await self.repo.return_stock(row["reward_id"])
        await PointsService(self.uow, self.settings, self.now).release(row["member_id"], redemption_id)
        return True

    @staticmethod
    async def stale_of(
        conn: asyncpg.Connection, settings: CommerceSettings, now: datetime, limit: int = 100
    ) -> list[str]:
        """Redemptions still reserved ``COMMERCE_REDEMPTION_STALE_SECONDS`` after they started."""
        before = now - timedelta(seconds=settings.redemption_stale_seconds)
        return [r["redemption_id"] for r in await RewardRepository(conn).stale(before, limit)]
