"""The member's routes, forwarded to the service that owns each, and the ``/me`` composition.

A :class:`MemberRoute` names the owning service and its internal path; the ``{member_id}`` in that
path is filled from the verified session token and from nowhere else, so a client cannot address
another member's resources by sending an id (no BOLA by construction). Other path parameters are
URL-quoted and may not be dot segments. The call carries the internal credential, the request id
and the trace context (``services/gateway/upstreams.py``), and the owner's answer is mapped to our
problems there. Routes of later issues (points, orders, gifts...) are added to the table below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from services.gateway.members.schemas import (
    BehaviourEvent,
    LinkedApp,
    MemberView,
    MeOut,
    PhoneBinding,
    PhoneOut,
    ServiceAccountFollow,
)
from services.gateway.sessions.service import MemberSession
from services.gateway.upstreams import ErrorMap, Service, UpstreamAnswer, Upstreams, parse
from shared.errors import BadRequest, InvalidPhoneCode, PhoneTaken, SiyuError, Unauthorized
from shared.wechat.apps import AppKind, WeChatApps


class MemberGone(Unauthorized):
    type_slug = "member-not-found"
    title = "Member not found"


def _member_gone(_: UpstreamAnswer) -> SiyuError:
    return MemberGone("the member of this session no longer exists; sign in again")


@dataclass(frozen=True)
class MemberRoute:
    service: Service
    method: str
    path: str  # the owner's internal path; must contain {member_id}
    expect: frozenset[int] = frozenset({200})
    errors: ErrorMap = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "{member_id}" not in self.path:
            raise ValueError(f"a member route must be scoped by {{member_id}}: {self.path}")


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


class MemberRouter:
    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    async def forward(
        self, member: MemberSession, route: MemberRoute, *, json_body: Any = None, **path_params: str
    ) -> httpx.Response:
        if "member_id" in path_params:
            raise ValueError("the member id comes from the session token, never from the request")
        for name, value in path_params.items():
            if value in ("", ".", "..") or len(value) > 128:
                raise BadRequest(f"invalid {name}")
        quoted = {name: quote(value, safe="") for name, value in path_params.items()}
        path = route.path.format(member_id=member.member_id, **quoted)
        errors: dict[int, Any] = {404: _member_gone, **route.errors}
        return await self.upstreams.request(
            route.service, route.method, path, json_body=json_body, expect=route.expect, errors=errors
        )


class MemberService:
    def __init__(self, upstreams: Upstreams, apps: WeChatApps) -> None:
        self.router = MemberRouter(upstreams)
        self.apps = apps

    async def me(self, member: MemberSession) -> MeOut:
        """The caller's member, composed from identity's view: only the brand's own apps are named."""
        view = parse(MemberView, await self.router.forward(member, MEMBER_VIEW), "identity")
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
            tier=None,
            points_balance=None,
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
