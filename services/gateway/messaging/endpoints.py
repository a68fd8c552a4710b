"""``POST /api/v1/subscriptions`` and ``POST /api/v1/opens``: what the mini-program tells notify.

Both need the session token and count in the member's writes budget; the member is the session's.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.gateway.deps import CappedBodyRoute, Deps, IdempotencyKey, WritingMember
from services.gateway.idempotency.service import fingerprint
from services.gateway.messaging.schemas import OpenOut, OpenRequest, SubscriptionsRequest
from services.gateway.messaging.service import MessagingService
from services.gateway.sessions.schemas import problem_responses

router = APIRouter(
    prefix="/api/v1",
    tags=["mini-program"],
    route_class=CappedBodyRoute,
    responses=problem_responses(401, 413, 422, 429, 502, 503),
)


@router.post(
    "/subscriptions",
    status_code=204,
    response_class=Response,
    summary="Record what wx.requestSubscribeMessage returned",
)
async def record_subscriptions(
    body: SubscriptionsRequest, member: WritingMember, request: Request, deps: Deps, key: IdempotencyKey
) -> Response:
    """204 once notify has recorded the member's answers: each `accept` is one message of that
    template notify may send the member (the same acceptance pushed by WeChat counts once)."""

    async def record() -> Response:
        return await MessagingService(deps.upstreams, deps.apps).record_subscriptions(member, body.results)

    scope = f"member:{member.member_id}"
    return await deps.idempotency.run(scope, key, fingerprint("POST", request.url.path, body), record)


@router.post("/opens", response_model=OpenOut, summary="Report the page a message opened")
async def record_open(
    body: OpenRequest, member: WritingMember, request: Request, deps: Deps, key: IdempotencyKey
) -> Response:
    """The mini-program reports the page (with its query) it opened from a message; notify counts
    the message as opened when the page is one of its messages' jumps to this member. A page
    that is not is answered `{"attributed": false}`; reporting the same open twice counts once."""

    async def record() -> Response:
        return await MessagingService(deps.upstreams, deps.apps).record_open(member, body.page)

    scope = f"member:{member.member_id}"
    return await deps.idempotency.run(scope, key, fingerprint("POST", request.url.path, body), record)
