"""Behaviour events from the mini-program (through the gateway)."""

from __future__ import annotations

import uuid
from datetime import UTC

from fastapi import APIRouter, status

from services.identity.behaviour.schemas import EVENT_MAX_AGE, EVENT_MAX_SKEW, BehaviourAccepted, BehaviourBatch
from services.identity.behaviour.service import BehaviourService
from services.identity.deps import Deps
from services.identity.members.service import utcnow
from shared.app import InternalOnly
from shared.errors import UnknownApp, Unprocessable
from shared.wechat.apps import AppKind

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["behaviour"])


@router.post("/members/{member_id}/events", status_code=status.HTTP_202_ACCEPTED, response_model=BehaviourAccepted)
async def record_events(member_id: uuid.UUID, body: BehaviourBatch, deps: Deps) -> BehaviourAccepted:
    """Behaviour events (≤50 a call). A batch with any invalid event is refused whole (422) and
    nothing is written; a retried batch is recognised event by event."""
    now = utcnow()
    for i, e in enumerate(body.events):
        if e.occurred_at > now + EVENT_MAX_SKEW or e.occurred_at < now - EVENT_MAX_AGE:
            raise Unprocessable(
                "occurred_at must lie within the last 30 days (and not in the future)",
                errors=[{"loc": ["body", "events", i, "occurred_at"], "msg": "out of range"}],
            )
        if e.appid and deps.app_of_kind(e.appid, AppKind.MINI_PROGRAM) is None:
            raise UnknownApp(f"{e.appid} is not a mini-program of this brand")
    rows = [
        {
            "type": e.type,
            "object_id": e.object_id,
            "occurred_at": e.occurred_at.astimezone(UTC),
            "appid": e.appid,
            "props": e.props,
        }
        for e in body.events
    ]
    async with deps.db.unit_of_work() as uow:
        live, fresh = await BehaviourService(uow).record_behaviour(member_id, rows)
    return BehaviourAccepted(member_id=str(live), accepted=fresh, duplicates=len(rows) - fresh)
