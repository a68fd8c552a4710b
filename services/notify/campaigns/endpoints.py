"""Campaigns for the operator (the gateway's ``/admin/v1/campaigns...`` routes call these)."""

from __future__ import annotations

import uuid
from collections import Counter

from fastapi import APIRouter, Response

from services.notify.campaigns.audience import audience_page
from services.notify.campaigns.schemas import CampaignCreate, CampaignCreated, CampaignView, Preview
from services.notify.campaigns.service import CampaignService
from services.notify.deps import Deps, NotifyDeps
from services.notify.sends.repository import SendRepository
from shared.app import InternalOnly
from shared.uow import UnitOfWork

router = APIRouter(prefix="/internal/campaigns", dependencies=[InternalOnly], tags=["internal"])


def service(uow: UnitOfWork, deps: NotifyDeps) -> CampaignService:
    return CampaignService(uow, deps.rules.campaign, deps.library, deps.quiet, deps.caps)


@router.post("", status_code=201)
async def create_campaign(body: CampaignCreate, deps: Deps) -> CampaignCreated:
    async with deps.db.unit_of_work() as uow:
        campaign_id = await service(uow, deps).create(body)
    return CampaignCreated(campaign_id=campaign_id)


@router.get("/{campaign_id}/preview")
async def preview_campaign(campaign_id: uuid.UUID, deps: Deps) -> Preview:
    async with deps.db.unit_of_work(readonly=True) as uow:
        campaign = await service(uow, deps).get(campaign_id)
    channels: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    total, cursor = 0, None
    while True:
        page = await audience_page(deps.identity, campaign["audience"], cursor)  # no connection held meanwhile
        total += len(page.member_ids)
        async with deps.db.unit_of_work(readonly=True) as uow:
            await service(uow, deps).preview(page.member_ids, deps.clock(), (channels, skipped))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return Preview(audience=total, channels=dict(channels), skipped=dict(skipped))


@router.post("/{campaign_id}/start", status_code=202)
async def start_campaign(campaign_id: uuid.UUID, deps: Deps) -> Response:
    async with deps.db.unit_of_work() as uow:
        await service(uow, deps).start(campaign_id)
    return Response(status_code=202)


@router.post("/{campaign_id}/cancel", status_code=202)
async def cancel_campaign(campaign_id: uuid.UUID, deps: Deps) -> Response:
    async with deps.db.unit_of_work() as uow:
        await service(uow, deps).cancel(campaign_id, deps.clock())
    return Response(status_code=202)


@router.get("/{campaign_id}")
async def get_campaign(campaign_id: uuid.UUID, deps: Deps) -> CampaignView:
    async with deps.db.unit_of_work(readonly=True, isolation="repeatable_read") as uow:
        campaign = await service(uow, deps).get(campaign_id)
        # Once its sends reach the retention horizon the recap is the one stored then (retention.py).
        stats = campaign["recap"] or await SendRepository(uow.conn).campaign_stats(campaign_id)
    state = campaign["state"]
    if state == "running" and campaign["fanout_done"] and stats["waiting"] == 0:
        state = "completed"
    return CampaignView(campaign_id=campaign_id, name=campaign["name"], kind=campaign["kind"], state=state, **stats)
