"""Identity's internal HTTP API (internal credential only)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.identity.repository import MemberRepository
from services.identity.service import IdentityService
from shared.app import InternalOnly, SessionDep
from shared.errors import NotFound

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    appid: str = Field(max_length=32)
    openid: str = Field(max_length=64)


@router.get("/members/{member_id}")
async def get_member(member_id: uuid.UUID, session: SessionDep) -> dict[str, object]:
    return await IdentityService(MemberRepository(session)).member_view(member_id)


@router.post("/resolve")
async def resolve(body: ResolveRequest, session: SessionDep) -> dict[str, object]:
    """The member behind an (appid, openid), without creating one."""
    identity = await MemberRepository(session).identity(body.appid, body.openid)
    if identity is None:
        raise NotFound("no member is known for this appid and openid")
    return await IdentityService(MemberRepository(session)).member_view(identity.member_id)
