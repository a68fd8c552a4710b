"""The points mall for the gateway: ``GET /internal/rewards`` (``/api/v1/rewards``) and
``POST /internal/members/{member_id}/rewards/{reward_id}/redemptions`` (``/api/v1/rewards/{id}/redemptions``,
``Idempotency-Key`` header required); the operator adds rewards with ``POST /internal/admin/rewards``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, status

from services.commerce.deps import Deps
from services.commerce.rewards.repository import RewardRepository
from services.commerce.rewards.schemas import NewReward, RedemptionAnswer, RewardItem
from services.commerce.rewards.service import RewardService
from shared.app import InternalOnly
from shared.errors import IdempotencyKeyRequired, RedemptionFailed
from shared.observability import get_logger

log = get_logger(__name__)

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])

RewardId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{2,63}$")]
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


@router.get("/rewards", response_model=list[RewardItem])
async def list_rewards(deps: Deps) -> list[RewardItem]:
    async with deps.db.connection() as conn:
        return [RewardItem(**dict(r)) for r in await RewardRepository(conn).active()]


@router.post("/admin/rewards", status_code=status.HTTP_201_CREATED, response_model=RewardItem)
async def create_reward(body: NewReward, deps: Deps) -> RewardItem:
    async with deps.db.unit_of_work() as uow:
        await RewardService(uow, deps.settings, deps.clock()).create(body)
    return RewardItem(
        reward_id=body.reward_id, title=body.title, cost_points=body.cost_points, kind=body.kind, remaining=body.stock
    )


@router.post(
    "/members/{member_id}/rewards/{reward_id}/redemptions",
    status_code=status.HTTP_201_CREATED,
    response_model=RedemptionAnswer,
    response_model_exclude_none=True,
)
async def redeem(
    member_id: uuid.UUID,
    reward_id: RewardId,
    deps: Deps,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> RedemptionAnswer:
    """201 ``{"redemption_id", "points_spent", "coupon"?}``; 409 ``insufficient-points`` / ``sold-out``
    (nothing reserved); the same key again answers the same redemption."""
    key = (idempotency_key or "").strip()
    if not key or not key.isprintable() or not key.isascii():
        raise IdempotencyKeyRequired("POST .../redemptions needs an Idempotency-Key header (1-255 printable ASCII)")
    now = deps.clock()
    async with deps.db.unit_of_work() as uow:
        reservation = await RewardService(uow, deps.settings, now).reserve(str(member_id), reward_id, key)
    if reservation.answer is not None:
        return reservation.answer
    if reservation.state == "released":
        raise RedemptionFailed(reservation.failure or "this redemption failed earlier; its points were returned")
    f = reservation.fulfilment
    try:
        if deps.fulfil is not None:
            await deps.fulfil(f)
        async with deps.db.unit_of_work() as uow:
            return await RewardService(uow, deps.settings, now).fulfil_and_commit(f)
    except RedemptionFailed:
        raise
    except Exception as exc:
        log.warning("redemption.failed", redemption_id=f.redemption_id, error=repr(exc))
        async with deps.db.unit_of_work() as uow:
            await RewardService(uow, deps.settings, now).release(f.redemption_id, repr(exc))
        raise RedemptionFailed(f"redemption {f.redemption_id} failed and was released; no points were spent") from exc
