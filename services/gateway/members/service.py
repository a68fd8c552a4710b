"""The member's routes, forwarded to the service that owns each, and the ``/me`` composition.

A :class:`MemberRoute` names the owning service and its internal path; the ``{member_id}`` in that
path (or, for an owner that takes it in the body, the body's member field) is filled from the
verified session token and from nowhere else, so a client cannot address another member's
resources by sending an id (no BOLA by construction). Other path parameters are URL-quoted and may
not be dot segments. The call carries the internal credential, the request id and the trace
context (``services/gateway/upstreams.py``), and the owner's answer is mapped to our problems
there. Identity's routes are in the table below; commerce's and notify's in their domains
(``loyalty/service.py``, ``messaging/service.py``).

``/me`` asks identity and commerce at once. Identity's part is the member: when identity fails,
``/me`` fails. Commerce's part (tier, points) is waited for at most ``GATEWAY_ME_POINTS_BUDGET_SECONDS``
and answered as null when commerce is slow, down or garbled: the member's page is served without
its points rather than not at all (``siyu_gateway_me_partial_total`` counts it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import Counter

from services.gateway.members.schemas import (
    BehaviourEvent,
    LinkedApp,
    MemberView,
    MeOut,
    PhoneBinding,
    PhoneOut,
    PointsSummary,
    ServiceAccountFollow,
)
from services.gateway.sessions.service import MemberSession
from services.gateway.upstreams import ErrorMap, Service, UpstreamAnswer, Upstreams, parse
from shared.errors import BadRequest, InvalidPhoneCode, PhoneTaken, SiyuError, Unauthorized
from shared.observability import get_logger
from shared.wechat.apps import AppKind, WeChatApps

log = get_logger(__name__)

ME_PARTIAL = Counter("siyu_gateway_me_partial_total", "GET /me answered without a part", ["part"])


class MemberGone(Unauthorized):
    type_slug = "member-not-found"
    title = "Member not found"


def _member_gone(_: UpstreamAnswer) -> SiyuError:
    return MemberGone("the member of this session no longer exists; sign in again")


@dataclass(frozen=True)
class MemberRoute:
    service: Service
    method: str
    path: str  # the owner's internal path; contains {member_id} unless ``member_field`` is set
    expect: frozenset[int] = frozenset({200})
    errors: ErrorMap = field(default_factory=dict)
    # The owner takes the member in the JSON body under this name instead of in the path.
    member_field: str | None = None
    # The owner de-duplicates this POST (by an idempotency key it is sent, or by its nature): the
    # transport may send it again when its connection died before the answer.
    retry_safe: bool = False

    def __post_init__(self) -> None:
        if ("{member_id}" in self.path) == (self.member_field is not None):
            raise ValueError(f"a member route is scoped by {{member_id}} in its path or by a body field: {self.path}")


# --- the route table ------------------------------------------------------------------------------

MEMBER_VIEW = MemberRoute("identity", "GET", "/internal/members/{member_id}")

BIND_PHONE = MemberRoute(
    "identity",
    "POST",
    "/internal/members/{member_id}/phone",
    errors={
        401: lambda a: InvalidPhoneCode(
            "the phone number code is invalid, expired or already used: ask the user again "
            "(getPhoneNumber) and send the new code",
            **a.extras(),
        ),
        409: lambda a: PhoneTaken("this phone number is already bound to another member", **a.extras()),
    },
)

RECORD_EVENTS = MemberRoute("identity", "POST", "/internal/members/{member_id}/events", expect=frozenset({200, 202}))

# commerce's part of /me (tier and points).
MEMBER_POINTS = MemberRoute("commerce", "GET", "/internal/members/{member_id}/points")


class MemberRouter:
    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    async def forward(
        self,
        member: MemberSession,
        route: MemberRoute,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        **path_params: str,
    ) -> httpx.Response:
        if "member_id" in path_params:
            raise ValueError("the member id comes from the session token, never from the request")
        for name, value in path_params.items():
            if value in ("", ".", "..") or len(value) > 128:
                raise BadRequest(f"invalid {name}")
        quoted = {name: quote(value, safe="") for name, value in path_params.items()}
        if route.member_field is not None:
            # Last, so it overrides whatever the body held under that name.
            json_body = {**(json_body or {}), route.member_field: str(member.member_id)}
            path = route.path.format(**quoted)
        else:
            path = route.path.format(member_id=member.member_id, **quoted)
        errors: dict[int, Any] = {404: _member_gone, **route.errors}
        return await self.upstreams.request(
            route.service,
            route.method,
            path,
            json_body=json_body,
            params=params,
            headers=headers,
            expect=route.expect,
            errors=errors,
            retry_safe=route.retry_safe,
        )


class MemberService:
    def __init__(self, upstreams: Upstreams, apps: WeChatApps, *, points_budget: float = 1.0) -> None:
        self.router = MemberRouter(upstreams)
        self.apps = apps
        self.points_budget = points_budget

    async def view(self, member: MemberSession) -> MemberView:
        return parse(MemberView, await self.router.forward(member, MEMBER_VIEW), "identity")

    async def points(self, member: MemberSession) -> PointsSummary | None:
        """commerce's tier and points, or None when commerce cannot answer within the budget."""
        try:
            async with asyncio.timeout(self.points_budget):
                return parse(PointsSummary, await self.router.forward(member, MEMBER_POINTS), "commerce")
        except (TimeoutError, SiyuError) as exc:
            ME_PARTIAL.labels("commerce").inc()
            log.warning("me.points_unavailable", error=repr(exc))
            return None

    async def me(self, member: MemberSession) -> MeOut:
        """The caller's member, composed from identity's view (only the brand's own apps are named)
        and commerce's tier and points, asked at once."""
        points = asyncio.create_task(self.points(member))
        try:
            view = await self.view(member)
        except BaseException:
            points.cancel()
            raise
        summary = await points
        linked: dict[str, LinkedApp] = {}
        for identity in view.identities:
            app = self.apps.get(identity.appid)
            if app is not None:
                linked.setdefault(app.appid, LinkedApp(appid=app.appid, kind=app.kind.value))
        service_accounts = self.apps.of_kind(AppKind.OFFICIAL_ACCOUNT)
        follow = None
        if service_accounts:
            oa = service_accounts[0].appid
            follow = ServiceAccountFollow(appid=oa, following=any(f.appid == oa and f.subscribed for f in view.follows))
        return MeOut(
            member_id=view.member_id,
            unionid_known=view.unionid_known,
            linked_apps=list(linked.values()),
            service_account=follow,
            phone_masked=view.phone_masked,
            tier=summary.tier if summary else None,
            points=summary.points if summary else None,
        )

    async def bind_phone(self, member: MemberSession, code: str) -> PhoneOut:
        response = await self.router.forward(member, BIND_PHONE, json_body={"appid": member.appid, "code": code})
        binding = parse(PhoneBinding, response, "identity")
        return PhoneOut(**binding.model_dump())

    async def record_events(self, member: MemberSession, events: list[BehaviourEvent]) -> int:
        # The app is the session's, never the client's to claim.
        sent = [{**e.model_dump(mode="json"), "appid": member.appid} for e in events]
        await self.router.forward(member, RECORD_EVENTS, json_body={"events": sent})
        return len(sent)
