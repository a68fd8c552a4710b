"""``GET /admin/v1/dead-letters`` and ``POST /admin/v1/dead-letters/{id}/redrive``: events that failed
for good (operator token required)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from services.gateway.deadletters.schemas import DeadLetter, Redriven
from services.gateway.deadletters.service import DeadLetters
from services.gateway.deps import CappedBodyRoute, Deps, Operator
from services.gateway.sessions.schemas import problem_responses

router = APIRouter(
    prefix="/admin/v1",
    tags=["operator"],
    route_class=CappedBodyRoute,
    dependencies=[Operator],
    responses=problem_responses(401, 413, 422, 429, 502, 503),
)


@router.get("/dead-letters", response_model=list[DeadLetter], summary="Events and messages that failed for good")
async def dead_letters(deps: Deps, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
    """notify's dead sends (`kind: send`, a message WeChat kept refusing) and the dead events of every
    consuming service's queue (`kind: event`, a handler that gave up), newest first, at most `limit`
    of each source. Listing removes nothing."""
    return await DeadLetters(deps.upstreams, deps.settings).listing(limit)


@router.post(
    "/dead-letters/{dead_letter_id}/redrive",
    status_code=202,
    response_model=Redriven,
    responses=problem_responses(404),
    summary="Send a dead letter round again",
)
async def redrive(dead_letter_id: Annotated[str, Path(min_length=1, max_length=160)], deps: Deps) -> Response:
    """By the id the listing gave: a send goes back to pending with a fresh retry budget; an event
    goes back to its service's own queue with a fresh attempt count. 404 when there is no such dead
    letter (any more)."""
    return await DeadLetters(deps.upstreams, deps.settings).redrive(dead_letter_id)
