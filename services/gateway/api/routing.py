"""The routing layer: member-scoped routes of the mini-program API, forwarded to the owning service.

A :class:`MemberRoute` names the owning service and its internal path; the ``{member_id}`` in that
path is filled from the verified session token and from nowhere else, so a client cannot address
another member's resources by sending an id (no BOLA by construction). Other path parameters are
URL-quoted and may not be dot segments. The call carries the internal credential, the request id
and the trace context (``shared.http.create_client``), and the owner's answer is mapped to our
problems by ``Upstreams.request``.

Routes of later issues (points, orders, gifts...) are added to the table at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from services.gateway.auth import MemberSession
from services.gateway.clients import (
    ErrorMap,
    InvalidPhoneCode,
    MemberGone,
    PhoneTaken,
    Service,
    UpstreamAnswer,
    Upstreams,
)
from shared.errors import BadRequest, SiyuError


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


# ---------------------------------------------------------------------------------------------
# The route table

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
