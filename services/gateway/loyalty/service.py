"""commerce's routes for the signed-in member (services/commerce/README.md, "Routes"), and how
commerce's refusals become the mini-program's problems.

The member is the session's (``MemberRouter``); the points mall's list is the one route that is not
the member's. A redemption carries the client's ``Idempotency-Key`` to commerce, which keeps one
redemption per (member, key): the gateway's own store replays the first answer to a retry, and a
retry that reaches commerce anyway (the gateway's claim expired, another replica) still spends once.
That is also why the transport may send a redemption again when its connection died.
"""

from __future__ import annotations

from fastapi import Response

from services.gateway.idempotency.service import KEY_HEADER, IdempotencyKeyReused
from services.gateway.loyalty.schemas import CHECK_IN, COUPONS, GIFTS, LEDGER, ORDERS, REDEMPTION, REWARDS
from services.gateway.members.service import MemberRoute, MemberRouter
from services.gateway.sessions.service import MemberSession
from services.gateway.upstreams import UpstreamAnswer, Upstreams, relay
from shared.errors import (
    AlreadyCheckedIn,
    Conflict,
    InsufficientPoints,
    RedemptionFailed,
    RewardNotFound,
    SiyuError,
    SoldOut,
    UpstreamError,
)


def _redemption_conflict(a: UpstreamAnswer) -> SiyuError:
    if a.type_slug == InsufficientPoints.type_slug:
        return InsufficientPoints(a.detail("not enough available points for this reward"))
    if a.type_slug == SoldOut.type_slug:
        return SoldOut(a.detail("this reward is sold out"))
    return Conflict(a.detail("the redemption conflicts with the reward's state"))


def _redemption_failed(a: UpstreamAnswer) -> SiyuError:
    if a.type_slug == RedemptionFailed.type_slug:
        return RedemptionFailed("the reward could not be fulfilled; its points were returned and nothing was spent")
    return UpstreamError("commerce answered 502")


# --- the route table ------------------------------------------------------------------------------

LEDGER_ROUTE = MemberRoute("commerce", "GET", "/internal/members/{member_id}/points/ledger")
ORDERS_ROUTE = MemberRoute("commerce", "GET", "/internal/members/{member_id}/orders")
COUPONS_ROUTE = MemberRoute("commerce", "GET", "/internal/members/{member_id}/coupons")
GIFTS_ROUTE = MemberRoute("commerce", "GET", "/internal/members/{member_id}/gifts")
REDEEM_ROUTE = MemberRoute(
    "commerce",
    "POST",
    "/internal/members/{member_id}/rewards/{reward_id}/redemptions",
    expect=frozenset({201}),
    errors={
        404: lambda a: RewardNotFound(a.detail("no such reward in the points mall")),
        409: _redemption_conflict,
        422: lambda a: IdempotencyKeyReused(a.detail("this Idempotency-Key was used for another reward")),
        502: _redemption_failed,
    },
    retry_safe=True,  # commerce keeps one redemption per (member, Idempotency-Key)
)
CHECK_IN_ROUTE = MemberRoute(
    "commerce",
    "POST",
    "/internal/members/{member_id}/checkins",
    expect=frozenset({201}),
    errors={409: lambda a: AlreadyCheckedIn(a.detail("already checked in today (Beijing time)"))},
)


class LoyaltyService:
    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams
        self.router = MemberRouter(upstreams)

    async def ledger(self, member: MemberSession, cursor: str | None) -> Response:
        params = {"cursor": cursor} if cursor else None
        return relay(LEDGER, await self.router.forward(member, LEDGER_ROUTE, params=params), "commerce")

    async def orders(self, member: MemberSession) -> Response:
        return relay(ORDERS, await self.router.forward(member, ORDERS_ROUTE), "commerce")

    async def rewards(self) -> Response:
        return relay(REWARDS, await self.upstreams.request("commerce", "GET", "/internal/rewards"), "commerce")

    async def redeem(self, member: MemberSession, reward_id: str, key: str) -> Response:
        response = await self.router.forward(member, REDEEM_ROUTE, headers={KEY_HEADER: key}, reward_id=reward_id)
        return relay(REDEMPTION, response, "commerce", status_code=201)

    async def coupons(self, member: MemberSession) -> Response:
        return relay(COUPONS, await self.router.forward(member, COUPONS_ROUTE), "commerce")

    async def check_in(self, member: MemberSession) -> Response:
        return relay(CHECK_IN, await self.router.forward(member, CHECK_IN_ROUTE), "commerce", status_code=201)

    async def gifts(self, member: MemberSession) -> Response:
        return relay(GIFTS, await self.router.forward(member, GIFTS_ROUTE), "commerce")
