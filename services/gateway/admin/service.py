"""The operator API's calls to identity, commerce and notify, and the member 360.

The member 360 asks the three owners at once. identity says who the member is: an id it does not
know is 404, identity away is 503. commerce's and notify's parts are null when their owner cannot
answer, and named in ``unavailable``: an operator looking at a member during an incident still sees
who they are. An id that was merged away is answered with its survivor (``resolved_from`` says so),
whose commerce and notify parts are then read too.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from services.gateway.admin.schemas import (
    CAMPAIGN,
    CREATED,
    MESSAGES,
    PREVIEW,
    CampaignAccepted,
    CampaignIn,
    CommercePart,
    IdentityPart,
    Member360,
    MessageOut,
)
from services.gateway.upstreams import ErrorMap, UpstreamAnswer, Upstreams, parse, relay
from shared.errors import Conflict, MemberNotFound, NotFound, SiyuError, Unprocessable
from shared.observability import get_logger

log = get_logger(__name__)

RECENT_MESSAGES = 20
Part = Literal["commerce", "notify"]


def _unprocessable(a: UpstreamAnswer) -> SiyuError:
    errors = a.problem.get("errors")
    if isinstance(errors, list):
        return Unprocessable(a.detail("notify refused the request"), errors=errors[:20])
    return Unprocessable(a.detail("notify refused the request"))


CAMPAIGN_ERRORS: ErrorMap = {
    404: lambda a: NotFound(a.detail("no such campaign")),
    409: lambda a: Conflict(a.detail("the campaign's state does not allow this")),
    422: _unprocessable,
}
MEMBER_ERRORS: ErrorMap = {404: lambda a: MemberNotFound(a.detail("no such member"))}


class AdminService:
    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    # --- the member 360 ---------------------------------------------------------------------------

    async def member(self, member_id: uuid.UUID) -> Response:
        identity = asyncio.create_task(self._identity(member_id))
        commerce = asyncio.create_task(self._part("commerce", member_id))
        notify = asyncio.create_task(self._part("notify", member_id))
        try:
            view = await identity
        except BaseException:
            commerce.cancel()
            notify.cancel()
            raise
        shop, messages = await commerce, await notify
        if view.member_id != str(member_id):  # merged away: the survivor's parts
            survivor = uuid.UUID(view.member_id)
            shop, messages = await asyncio.gather(self._part("commerce", survivor), self._part("notify", survivor))
        unavailable: list[Part] = []
        body: dict[str, Any] = view.model_dump(mode="json")
        if isinstance(shop, CommercePart):
            body.update(shop.model_dump(mode="json", exclude={"member_id"}))
        else:
            unavailable.append("commerce")
        if isinstance(messages, list):
            body["messages"] = [m.model_dump(mode="json") for m in messages]
        else:
            unavailable.append("notify")
        body["unavailable"] = unavailable
        return JSONResponse(Member360.model_validate(body).model_dump(mode="json"))

    async def _identity(self, member_id: uuid.UUID) -> IdentityPart:
        response = await self.upstreams.request(
            "identity", "GET", f"/internal/members/{member_id}", errors=MEMBER_ERRORS
        )
        return parse(IdentityPart, response, "identity")

    async def _part(self, part: Part, member_id: uuid.UUID) -> CommercePart | list[MessageOut] | None:
        """commerce's or notify's part, or None when its owner cannot answer now."""
        try:
            if part == "commerce":
                response = await self.upstreams.request("commerce", "GET", f"/internal/admin/members/{member_id}")
                return parse(CommercePart, response, "commerce")
            response = await self.upstreams.request(
                "notify", "GET", f"/internal/members/{member_id}/messages", params={"limit": str(RECENT_MESSAGES)}
            )
            return MESSAGES.validate_json(response.content)
        except (SiyuError, ValidationError) as exc:
            log.warning("admin.member_part_unavailable", part=part, error=repr(exc)[:300])
            return None

    async def messages(self, member_id: uuid.UUID, limit: int) -> Response:
        response = await self.upstreams.request(
            "notify", "GET", f"/internal/members/{member_id}/messages", params={"limit": str(limit)}
        )
        return relay(MESSAGES, response, "notify")

    # --- campaigns --------------------------------------------------------------------------------

    async def create_campaign(self, body: CampaignIn) -> Response:
        response = await self.upstreams.request(
            "notify",
            "POST",
            "/internal/campaigns",
            json_body=body.model_dump(mode="json", exclude_none=True),
            expect=frozenset({201}),
            errors=CAMPAIGN_ERRORS,
        )
        return relay(CREATED, response, "notify")

    async def preview(self, campaign_id: uuid.UUID) -> Response:
        response = await self.upstreams.request(
            "notify", "GET", f"/internal/campaigns/{campaign_id}/preview", errors=CAMPAIGN_ERRORS
        )
        return relay(PREVIEW, response, "notify")

    async def start(self, campaign_id: uuid.UUID) -> Response:
        return await self._act(campaign_id, "start", "running")

    async def cancel(self, campaign_id: uuid.UUID) -> Response:
        return await self._act(campaign_id, "cancel", "cancelled")

    async def _act(self, campaign_id: uuid.UUID, action: str, state: Literal["running", "cancelled"]) -> Response:
        # Starting and cancelling are idempotent at notify: a POST re-sent on a dead connection is harmless.
        await self.upstreams.request(
            "notify",
            "POST",
            f"/internal/campaigns/{campaign_id}/{action}",
            expect=frozenset({202}),
            errors=CAMPAIGN_ERRORS,
            retry_safe=True,
        )
        return _json(CampaignAccepted(campaign_id=str(campaign_id), state=state), 202)

    async def campaign(self, campaign_id: uuid.UUID) -> Response:
        response = await self.upstreams.request(
            "notify", "GET", f"/internal/campaigns/{campaign_id}", errors=CAMPAIGN_ERRORS
        )
        return relay(CAMPAIGN, response, "notify")


def _json(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
