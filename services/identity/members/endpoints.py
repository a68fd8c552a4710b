"""Member routes: the view, resolve, resolve-or-create for other services, merges and their undo.

Every route needs the internal credential (``X-Siyu-Internal-Token``). Identity trusts its caller
for *which* member is asked about: scoping a member to their own data is the gateway's job.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Response, status

from services.identity.deps import Deps
from services.identity.members.schemas import (
    IdentityAnswer,
    IdentityRequest,
    MemberView,
    MergeRequest,
    MergeView,
    ResolveRequest,
    UndoRequest,
)
from services.identity.members.service import MemberService, MemberViews, resolve_or_create
from shared.app import InternalOnly
from shared.errors import UnknownApp

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["members"])

JSON = "application/json"
VIEW_DOC: dict[int | str, dict[str, Any]] = {200: {"model": MemberView, "description": "the member view"}}


@router.get("/members/{member_id}", response_class=Response, responses=VIEW_DOC)
async def get_member(member_id: uuid.UUID, deps: Deps) -> Response:
    """A member's view; an id that was merged away answers with its survivor (``resolved_from`` set)."""
    async with deps.db.connection() as conn:
        return Response(await MemberViews(conn).by_id(member_id), media_type=JSON)


@router.post("/resolve", response_class=Response, responses=VIEW_DOC)
async def resolve(body: ResolveRequest, deps: Deps) -> Response:
    """The member behind an (appid, openid), without creating one."""
    async with deps.db.connection() as conn:
        return Response(await MemberViews(conn).by_identity(body.appid, body.openid), media_type=JSON)


@router.post("/identities", response_class=Response, responses={200: {"model": IdentityAnswer}})
async def resolve_identity(body: IdentityRequest, deps: Deps) -> Response:
    """Resolve-or-create for identities other services meet (a shop order's buyer, a gift's giver
    and recipient): attaches the unionid when given, merging if another member holds it. Idempotent."""
    app = deps.apps.get(body.appid)
    if app is None:
        raise UnknownApp(f"{body.appid} is not one of this brand's apps")
    found = await resolve_or_create(
        deps.db, appid=body.appid, app_kind=app.kind.value, openid=body.openid, unionid=body.unionid, source=body.source
    )
    answer = {
        "member_id": str(found.member_id),
        "created": found.created,
        "unionid_known": found.unionid_known,
        "merged": [str(m) for m in found.merged],
    }
    return Response(orjson.dumps(answer), media_type=JSON)


@router.get("/members/{member_id}/merges", response_model=list[MergeView])
async def member_merges(member_id: uuid.UUID, deps: Deps) -> list[MergeView]:
    """The merge log entries this member took part in, as survivor or as merged."""
    async with deps.db.unit_of_work(readonly=True) as uow:
        return [MergeView.of(m) for m in await MemberService(uow).merges_of(member_id)]


@router.post("/merges", status_code=status.HTTP_201_CREATED, response_model=MergeView)
async def merge_members(body: MergeRequest, deps: Deps) -> MergeView:
    """Operator merge of two members (e.g. a phone conflict confirmed to be one person)."""
    async with deps.db.unit_of_work() as uow:
        record = await MemberService(uow).merge_members(
            body.member_ids[0], body.member_ids[1], reason=body.reason, detail=body.detail
        )
    return MergeView.of(record)


@router.post("/merges/{merge_id}/undo", response_model=MergeView)
async def undo_merge(merge_id: uuid.UUID, body: UndoRequest, deps: Deps) -> MergeView:
    """Undo a wrong merge: the merged member gets back what moved; the pair is never auto-merged again."""
    async with deps.db.unit_of_work() as uow:
        record = await MemberService(uow).undo_merge(merge_id, reason=body.reason)
    return MergeView.of(record)
