"""``/admin/v1``: the operator API (contracts.md). Every route needs ``Authorization: Bearer
<SIYU_ADMIN_TOKEN>``; errors are problems, as on ``/api/v1``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from services.gateway.admin.schemas import (
    CampaignAccepted,
    CampaignCreated,
    CampaignIn,
    CampaignOut,
    CampaignPreview,
    Member360,
    MessageOut,
)
from services.gateway.admin.service import AdminService
from services.gateway.deps import CappedBodyRoute, Deps, IdempotencyKey, Operator
from services.gateway.idempotency.service import fingerprint
from services.gateway.sessions.schemas import problem_responses

router = APIRouter(
    prefix="/admin/v1",
    tags=["operator"],
    route_class=CappedBodyRoute,
    dependencies=[Operator],
    responses=problem_responses(401, 413, 422, 429, 502, 503),
)


@router.get(
    "/members/{member_id}",
    response_model=Member360,
    responses=problem_responses(404),
    summary="The member 360: identities, tags, tier, points, orders, messages",
)
async def member_360(member_id: uuid.UUID, deps: Deps) -> Response:
    """identity's view (identities with their openids, follows, tags, the masked phone, profile),
    commerce's (tier, points with the latest ledger entries, orders, gifts, coupons, redemptions,
    orders brought in as a sharer) and notify's latest messages. 404 `member-not-found` when identity
    does not know the id; a part whose owner is away is null and named in `unavailable`."""
    return await AdminService(deps.upstreams).member(member_id)


@router.get(
    "/members/{member_id}/messages",
    response_model=list[MessageOut],
    summary="The member's send log, newest first",
)
async def member_messages(
    member_id: uuid.UUID, deps: Deps, limit: Annotated[int, Query(ge=1, le=500)] = 200
) -> Response:
    """Every message considered for the member, with its rule or campaign, channel, status, reason
    (`not_following`, `no_authorisation`, `cap_reached`, `quiet_hours`, WeChat's errcode...) and times."""
    return await AdminService(deps.upstreams).messages(member_id, limit)


@router.post(
    "/campaigns",
    status_code=201,
    response_model=CampaignCreated,
    summary="Create a campaign (a draft: nothing is sent before start)",
)
async def create_campaign(body: CampaignIn, request: Request, deps: Deps, key: IdempotencyKey) -> Response:
    """The audience is exactly one of an identity tag, a segment or member ids. A retry with the
    same Idempotency-Key gets the same campaign."""

    async def create() -> Response:
        return await AdminService(deps.upstreams).create_campaign(body)

    return await deps.idempotency.run("admin", key, fingerprint("POST", request.url.path, body), create)


@router.get(
    "/campaigns/{campaign_id}/preview",
    response_model=CampaignPreview,
    responses=problem_responses(404),
    summary="Who a campaign would reach, by channel, and who it would skip, by reason",
)
async def preview_campaign(campaign_id: uuid.UUID, deps: Deps) -> Response:
    """Computed now against the audience, the members' follow state, authorisations, windows and
    caps; nothing is sent."""
    return await AdminService(deps.upstreams).preview(campaign_id)


@router.post(
    "/campaigns/{campaign_id}/start",
    status_code=202,
    response_model=CampaignAccepted,
    responses=problem_responses(404, 409),
    summary="Start sending a campaign",
)
async def start_campaign(campaign_id: uuid.UUID, deps: Deps) -> Response:
    """202: the campaign fans out in the background (starting a running one again is harmless);
    409 when it was cancelled or is over."""
    return await AdminService(deps.upstreams).start(campaign_id)


@router.post(
    "/campaigns/{campaign_id}/cancel",
    status_code=202,
    response_model=CampaignAccepted,
    responses=problem_responses(404, 409),
    summary="Cancel a campaign",
)
async def cancel_campaign(campaign_id: uuid.UUID, deps: Deps) -> Response:
    """202: what is not sent yet is skipped with reason `cancelled`; 409 when it is completed."""
    return await AdminService(deps.upstreams).cancel(campaign_id)


@router.get(
    "/campaigns/{campaign_id}",
    response_model=CampaignOut,
    responses=problem_responses(404),
    summary="A campaign's state and funnel",
)
async def get_campaign(campaign_id: uuid.UUID, deps: Deps) -> Response:
    """`targeted`, `sent` (WeChat took it), `delivered` (WeChat confirmed), `skipped` by reason,
    `failed`, `waiting` (deferred), `opened` (the mini-program reported the jump) and `ordered`
    (an order within the attribution window of the open)."""
    return await AdminService(deps.upstreams).campaign(campaign_id)
