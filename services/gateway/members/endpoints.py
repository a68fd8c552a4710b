"""``/api/v1/me...`` and ``/api/v1/events``: the signed-in member's routes.

Every route needs the session token; the member it names is the only member a call can read or
change.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.gateway.deps import CappedBodyRoute, CurrentMember, Deps, EventsMember, IdempotencyKey
from services.gateway.idempotency.service import fingerprint
from services.gateway.members.schemas import EventsAccepted, EventsRequest, MeOut, PhoneOut, PhoneRequest
from services.gateway.members.service import MemberService
from services.gateway.sessions.schemas import problem_responses

router = APIRouter(
    prefix="/api/v1", tags=["mini-program"], route_class=CappedBodyRoute, responses=problem_responses(413, 422, 429)
)


@router.get("/me", response_model=MeOut, responses=problem_responses(401, 502, 503), summary="The signed-in member")
async def me(member: CurrentMember, deps: Deps) -> MeOut:
    """The caller's member: identity's view (apps, follow, phone) and commerce's tier and points,
    asked at once. When commerce cannot answer within `GATEWAY_ME_POINTS_BUDGET_SECONDS`, `tier` and
    `points` are null and the rest is served; when identity cannot, the call fails (503)."""
    service = MemberService(deps.upstreams, deps.apps, points_budget=deps.settings.me_points_budget_seconds)
    return await service.me(member)


@router.post(
    "/me/phone",
    response_model=PhoneOut,
    responses=problem_responses(401, 409, 503),
    summary="Bind the phone number from a getPhoneNumber code",
)
async def bind_phone(
    body: PhoneRequest, member: CurrentMember, request: Request, deps: Deps, key: IdempotencyKey
) -> Response:
    """401 when the code is invalid or used; 409 when the number belongs to another member."""

    async def bind() -> Response:
        bound = await MemberService(deps.upstreams, deps.apps).bind_phone(member, body.code)
        return JSONResponse(bound.model_dump(mode="json"), status_code=200)

    scope = f"member:{member.member_id}"
    return await deps.idempotency.run(scope, key, fingerprint("POST", request.url.path, body), bind)


@router.post(
    "/events",
    status_code=202,
    response_model=EventsAccepted,
    responses=problem_responses(401, 503),
    summary="Record behaviour events (at most 50 per call)",
)
async def record_events(
    body: EventsRequest, member: EventsMember, request: Request, deps: Deps, key: IdempotencyKey
) -> Response:
    """Behaviour events for the member's profile: `product_view`, `add_to_cart`, `share`,
    `article_read`; at most 50 per call, none older than 30 days. Identity recognises a retried
    event, so a resent batch is not counted twice."""

    async def record() -> Response:
        accepted = await MemberService(deps.upstreams, deps.apps).record_events(member, body.events)
        return JSONResponse(EventsAccepted(accepted=accepted).model_dump(mode="json"), status_code=202)

    scope = f"member:{member.member_id}"
    return await deps.idempotency.run(scope, key, fingerprint("POST", request.url.path, body), record)
