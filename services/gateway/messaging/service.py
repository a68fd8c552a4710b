"""notify's routes for the signed-in member (services/notify/README.md, "the gateway routes it serves").

Subscriptions are recorded by (app, openid). notify learns a member's mini-program openid from
identity's events; a member who signed in a moment ago may not be known to it yet (404). Then the
gateway asks identity for the openid of the session's app and sends it along, so an answer the
member gave is never lost to that race.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Response

from services.gateway.members.service import MemberRoute, MemberRouter, MemberService
from services.gateway.messaging.schemas import OPEN
from services.gateway.sessions.service import MemberSession
from services.gateway.upstreams import UpstreamAnswer, Upstreams, relay
from shared.errors import DependencyUnavailable, SiyuError, Unprocessable
from shared.wechat.apps import WeChatApps


class _MemberNotKnownToNotify(DependencyUnavailable):
    """notify has no mini-program identity for the member yet. Handled here by sending the openid;
    should notify still not take it, the client is told to retry shortly."""

    def __init__(self) -> None:
        super().__init__("notify is still learning about this member; retry in 2 s", headers={"Retry-After": "2"})


def _unprocessable(a: UpstreamAnswer) -> SiyuError:
    return Unprocessable(a.detail("notify could not record these answers"))


SUBSCRIPTIONS_ROUTE = MemberRoute(
    "notify",
    "POST",
    "/internal/members/{member_id}/subscriptions",
    expect=frozenset({204}),
    errors={404: lambda _: _MemberNotKnownToNotify(), 422: _unprocessable},
)
OPENS_ROUTE = MemberRoute(
    "notify",
    "POST",
    "/internal/opens",
    member_field="member_id",
    errors={422: _unprocessable},
    retry_safe=True,  # an open is recorded once (the first time stays)
)


class MessagingService:
    def __init__(self, upstreams: Upstreams, apps: WeChatApps) -> None:
        self.router = MemberRouter(upstreams)
        self.members = MemberService(upstreams, apps)

    async def record_subscriptions(self, member: MemberSession, results: Mapping[str, str]) -> Response:
        body: dict[str, Any] = {"results": dict(results), "appid": member.appid}
        try:
            await self.router.forward(member, SUBSCRIPTIONS_ROUTE, json_body=body)
        except _MemberNotKnownToNotify:
            view = await self.members.view(member)
            openid = next((i.openid for i in view.identities if i.appid == member.appid and i.openid), None)
            if openid is None:
                raise Unprocessable("this member has no identity in the mini-program of this session") from None
            await self.router.forward(member, SUBSCRIPTIONS_ROUTE, json_body={**body, "openid": openid})
        return Response(status_code=204)

    async def record_open(self, member: MemberSession, page: str) -> Response:
        return relay(OPEN, await self.router.forward(member, OPENS_ROUTE, json_body={"page": page}), "notify")
