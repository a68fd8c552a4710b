"""``POST /internal/members/{member_id}/subscriptions``: the gateway's ``POST /api/v1/subscriptions``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi import APIRouter, Path, Response

from services.notify.authorisations.schemas import SubscriptionResults
from services.notify.authorisations.service import AuthorisationService
from services.notify.deps import Deps
from services.notify.members.repository import MemberRepository
from shared.app import InternalOnly
from shared.errors import NotFound, Unprocessable

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])

_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MEMBER_ID = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")


@router.post("/members/{member_id}/subscriptions", status_code=204)
async def record_subscriptions(body: SubscriptionResults, deps: Deps, member_id: str = MEMBER_ID) -> Response:
    appid = body.appid or deps.mp_appid
    if appid is None or appid != deps.mp_appid:
        raise Unprocessable("subscriptions are recorded for the brand's mini-program")
    bad = [t for t in body.results if not _TEMPLATE_ID.match(t)]
    if bad:
        raise Unprocessable("a template id is malformed", errors=[{"template_id": t[:80]} for t in bad])
    async with deps.db.unit_of_work() as uow:
        openid = body.openid or await MemberRepository(uow.conn).openid(member_id, appid)
        if openid is None:
            raise NotFound("notify knows no mini-program identity for this member yet")
        service = AuthorisationService(uow, deps.library)
        now = datetime.now(UTC)
        for template_id, answer in body.results.items():
            await service.answer(appid, openid, template_id, answer, "miniprogram", now)
    return Response(status_code=204)
