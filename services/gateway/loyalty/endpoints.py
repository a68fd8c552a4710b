"""``/api/v1`` routes of the member's points, orders, gifts, points mall, coupons and check-ins.

Every route needs the session token and answers for its member only (commerce is asked for the
token's member, never for an id the request names). Reads count in the member's budget; a
redemption or a check-in also in the member's writes budget. Commerce's answers are passed on in
the contract's shapes (``loyalty/schemas.py``); its refusals as the contract's problems.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from services.gateway.deps import (
    REQUIRED_KEY_DOC,
    CappedBodyRoute,
    CurrentMember,
    Deps,
    IdempotencyKey,
    RequiredIdempotencyKey,
    WritingMember,
)
from services.gateway.idempotency.service import fingerprint
from services.gateway.loyalty.schemas import (
    LEDGER_CURSOR,
    REWARD_ID,
    CheckIn,
    CouponItem,
    GiftItem,
    LedgerPage,
    OrderItem,
    Redemption,
    RewardItem,
)
from services.gateway.loyalty.service import LoyaltyService
from services.gateway.sessions.schemas import problem_responses

router = APIRouter(
    prefix="/api/v1",
    tags=["mini-program"],
    route_class=CappedBodyRoute,
    responses=problem_responses(401, 413, 422, 429, 502, 503),
)


@router.get("/me/points/ledger", response_model=LedgerPage, summary="The member's points ledger, newest first")
async def points_ledger(
    member: CurrentMember,
    deps: Deps,
    cursor: Annotated[
        str | None,
        Query(pattern=LEDGER_CURSOR, description="`next_cursor` of the previous page; omit for the first page."),
    ] = None,
) -> Response:
    """Every entry that moved the member's points (earn, redeem, expire, reverse, adjust, checkin),
    20 a page. An earn entry shows its points' state now (pending until the shop settles the order)."""
    return await LoyaltyService(deps.upstreams).ledger(member, cursor)


@router.get("/me/orders", response_model=list[OrderItem], summary="The member's shop orders")
async def my_orders(member: CurrentMember, deps: Deps) -> Response:
    """The member's WeChat Shop orders, newest first, gifts sent and received included."""
    return await LoyaltyService(deps.upstreams).orders(member)


@router.get("/rewards", response_model=list[RewardItem], summary="The points mall")
async def rewards(member: CurrentMember, deps: Deps) -> Response:
    """The rewards on offer, with their cost in points and what is left in stock."""
    return await LoyaltyService(deps.upstreams).rewards()


RewardId = Annotated[str, Path(pattern=REWARD_ID, description="A reward of `GET /api/v1/rewards`.")]


@router.post(
    "/rewards/{reward_id}/redemptions",
    status_code=201,
    response_model=Redemption,
    responses=problem_responses(400, 404, 409),
    summary="Redeem a reward with points (Idempotency-Key required)",
    openapi_extra=REQUIRED_KEY_DOC,
)
async def redeem(
    reward_id: RewardId, member: WritingMember, request: Request, deps: Deps, key: RequiredIdempotencyKey
) -> Response:
    """Spends the reward's cost in points: 201 with the redemption (and the coupon a coupon reward
    issues). 409 `insufficient-points` or `sold-out` spend nothing; 404 `reward-not-found`; 400
    `idempotency-key-required` without the header. A retry with the same key gets the first answer
    and never spends twice; 502 `redemption-failed` returned the points."""

    async def spend() -> Response:
        return await LoyaltyService(deps.upstreams).redeem(member, reward_id, key)

    scope = f"member:{member.member_id}"
    return await deps.idempotency.run(scope, key, fingerprint("POST", request.url.path, None), spend)


@router.get("/me/coupons", response_model=list[CouponItem], summary="The member's coupons")
async def my_coupons(member: CurrentMember, deps: Deps) -> Response:
    """Coupons issued to the member (welcome, tier, points mall, reminders), newest first."""
    return await LoyaltyService(deps.upstreams).coupons(member)


@router.post(
    "/checkins",
    status_code=201,
    response_model=CheckIn,
    responses=problem_responses(409),
    summary="Check in for today's points",
)
async def check_in(member: WritingMember, request: Request, deps: Deps, key: IdempotencyKey) -> Response:
    """201 with the points earned and the streak the first time in a Beijing day; 409
    `already-checked-in` after that (a retry with the same Idempotency-Key gets the 201 again)."""

    async def check() -> Response:
        return await LoyaltyService(deps.upstreams).check_in(member)

    scope = f"member:{member.member_id}"
    return await deps.idempotency.run(scope, key, fingerprint("POST", request.url.path, None), check)


@router.get("/gifts", response_model=list[GiftItem], summary="Gifts the member sent and received")
async def gifts(member: CurrentMember, deps: Deps) -> Response:
    """Each gift with the member's role in it (giver, recipient), its state (waiting, accepted,
    expired, cancelled) and the points it earned; never the other side's phone or address."""
    return await LoyaltyService(deps.upstreams).gifts(member)
