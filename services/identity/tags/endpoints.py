"""Tags, segments, member lists and the rule sweep."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from services.identity.deps import Deps
from services.identity.members.repository import MemberRepository
from services.identity.tags.repository import TagRepository
from services.identity.tags.schemas import (
    MemberTagsView,
    NewSegment,
    NewTag,
    RulesRefresh,
    RulesRefreshed,
    SegmentView,
    TagChange,
    TagView,
)
from services.identity.tags.service import TagService
from shared.app import InternalOnly
from shared.errors import NotFound, Unprocessable

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["tags"])


@router.post("/members/{member_id}/tags", response_model=MemberTagsView)
async def change_tags(member_id: uuid.UUID, body: TagChange, deps: Deps) -> MemberTagsView:
    """Operator tags on one member (rule tags are computed and refused here)."""
    async with deps.db.unit_of_work() as uow:
        member = await MemberRepository(uow.conn).live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        service = TagService(uow)
        await service.set_operator_tags(member.id, add=body.add, remove=body.remove, operator=body.operator)
        names = await service.tags.tag_names_of(member.id)
    return MemberTagsView(member_id=str(member.id), tags=names)


@router.get("/members", responses={200: {"description": "members page: {members: [...], next_after}"}})
async def list_members(
    deps: Deps,
    tag: Annotated[str | None, Query(max_length=32)] = None,
    segment: Annotated[str | None, Query(max_length=64)] = None,
    after: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Members with a tag, or in a segment, page by page (``after`` = the previous page's ``next_after``)."""
    if (tag is None) == (segment is None):
        raise Unprocessable("give exactly one of tag or segment")
    async with deps.db.connection() as conn:
        tags = TagRepository(conn)
        if tag is not None:
            query: tuple[list[str], list[str], list[str]] = ([tag], [], [])
        else:
            seg = await tags.segment(segment or "")
            if seg is None:
                raise NotFound(f"no segment {segment}")
            query = (list(seg["all_tags"]), list(seg["any_tags"]), list(seg["none_tags"]))
        page, size, last = await tags.members_page(
            all_tags=query[0], any_tags=query[1], none_tags=query[2], after=after, limit=limit
        )
    next_after = f'"{last}"' if size == limit and last else "null"
    return Response(f'{{"members": {page}, "next_after": {next_after}}}', media_type="application/json")


@router.get("/tags", response_model=list[TagView])
async def list_tags(deps: Deps) -> list[TagView]:
    async with deps.db.connection() as conn:
        tags = TagRepository(conn)
        await tags.ensure_rule_tags()
        return [TagView(**dict(r)) for r in await tags.all_tags()]


@router.post("/tags", status_code=status.HTTP_201_CREATED, response_model=TagView)
async def create_tag(body: NewTag, deps: Deps) -> TagView:
    async with deps.db.unit_of_work() as uow:
        row = await TagService(uow).create_tag(
            body.name, description=body.description, wechat_sync=body.wechat_sync, priority=body.priority
        )
    return TagView.model_validate(row)


@router.post("/segments", status_code=status.HTTP_201_CREATED, response_model=SegmentView)
async def create_segment(body: NewSegment, deps: Deps) -> SegmentView:
    async with deps.db.unit_of_work() as uow:
        row = await TagService(uow).create_segment(
            body.name,
            description=body.description,
            all_tags=body.all_tags,
            any_tags=body.any_tags,
            none_tags=body.none_tags,
        )
    return SegmentView.model_validate(row)


@router.get("/segments", response_model=list[SegmentView])
async def list_segments(deps: Deps) -> list[SegmentView]:
    async with deps.db.connection() as conn:
        return [SegmentView(**dict(r)) for r in await TagRepository(conn).segments()]


@router.post("/rules/refresh", response_model=RulesRefreshed)
async def refresh_rules(body: RulesRefresh, deps: Deps) -> RulesRefreshed:
    """Re-evaluate rule tags for a keyset page of members (time-based rules: new_member, lapsed):
    call with ``after`` = the previous ``next_after`` until it is null. One statement per page."""
    async with deps.db.unit_of_work() as uow:
        seen, last, changed = await TagService(uow).refresh_page(after=body.after, limit=body.limit)
    return RulesRefreshed(
        refreshed=seen, changed=changed, next_after=str(last) if seen == body.limit and last else None
    )
