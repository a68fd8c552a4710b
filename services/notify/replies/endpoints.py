"""``POST /internal/replies``: the gateway asks, within its budget, for a reply that needs data."""

from __future__ import annotations

from fastapi import APIRouter

from services.notify.deps import Deps
from services.notify.replies.schemas import ReplyAnswer, ReplyRequest
from services.notify.replies.service import ReplyService
from shared.app import InternalOnly

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])


@router.post("/replies", response_model=ReplyAnswer)
async def passive_reply(body: ReplyRequest, deps: Deps) -> ReplyAnswer:
    return await ReplyService(deps.reply_rules, deps.points).answer(body.appid, body.openid, body.ask())
