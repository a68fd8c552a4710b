"""The operator's view of sends: a member's send log, dead letters and their re-drive."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.notify.deps import Deps
from services.notify.sends.repository import SendRepository
from services.notify.sends.schemas import DeadLetter, MessageView
from shared.app import InternalOnly
from shared.errors import NotFound

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])

MemberId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
_DEAD_ID = re.compile(r"^send-([0-9]{1,18})$")


@router.get("/members/{member_id}/messages")
async def member_messages(
    member_id: MemberId, deps: Deps, limit: Annotated[int, Query(ge=1, le=500)] = 200
) -> list[MessageView]:
    """Every message considered for the member, newest first."""
    async with deps.db.connection() as conn:
        rows = await SendRepository(conn).log(member_id, limit)
    return [MessageView(send_id=str(r.pop("id")), **r) for r in rows]


@router.get("/dead-letters")
async def dead_letters(deps: Deps, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DeadLetter]:
    """Sends that used up their retry budget."""
    async with deps.db.connection() as conn:
        rows = await SendRepository(conn).dead(limit)
    return [DeadLetter(id=f"send-{r.pop('id')}", kind="send", **r) for r in rows]


@router.post("/dead-letters/{dead_letter_id}/redrive", status_code=202)
async def redrive(dead_letter_id: Annotated[str, Path(max_length=40)], deps: Deps) -> dict[str, str]:
    m = _DEAD_ID.match(dead_letter_id)
    if not m:
        raise NotFound("no such dead letter")
    async with deps.db.connection() as conn:
        if not await SendRepository(conn).redrive(int(m[1]), deps.clock()):
            raise NotFound("no such dead letter")
    return {"id": dead_letter_id, "status": "pending"}
