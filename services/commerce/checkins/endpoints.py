"""``POST /internal/members/{member_id}/checkins`` — the gateway's ``POST /api/v1/checkins``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from services.commerce.checkins.schemas import CheckInAnswer
from services.commerce.checkins.service import CheckInService
from services.commerce.deps import Deps
from shared.app import InternalOnly

router = APIRouter(prefix="/internal/members", dependencies=[InternalOnly], tags=["internal"])


@router.post("/{member_id}/checkins", status_code=status.HTTP_201_CREATED, response_model=CheckInAnswer)
async def check_in(member_id: uuid.UUID, deps: Deps) -> CheckInAnswer:
    """201 ``{"points", "streak"}`` the first time in a Beijing day; 409 ``already-checked-in`` after."""
    async with deps.db.unit_of_work() as uow:
        points, streak = await CheckInService(uow, deps.settings, deps.clock()).check_in(str(member_id))
    return CheckInAnswer(points=points, streak=streak)
