"""``/api/v1``: what the brand's mini-program calls.

Sign-in exchanges a ``wx.login`` code for the gateway's own session token (identity alone talks to
WeChat and keeps ``session_key``). Every other route needs that token; the member it names is the
only member a call can read or change.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel

from services.gateway.api.deps import (
    CurrentMember,
    Deps,
    IdempotencyKey,
    client_address,
    limit_client,
    limit_events,
    limit_login,
)
from services.gateway.api.routing import BIND_PHONE, MEMBER_VIEW, RECORD_EVENTS, MemberRouter
from services.gateway.api.schemas import (
    EventsAccepted,
    EventsRequest,
    LinkedApp,
    MeOut,
    PhoneOut,
    PhoneRequest,
    Problem,
    ServiceAccountFollow,
    SessionOut,
    SessionRequest,
)
from services.gateway.bodycap import CappedBodyRoute
from services.gateway.clients import IdentityLogin, MemberView, PhoneBinding, parse
from services.gateway.idempotency import fingerprint
from shared.app import runtime_of
from shared.observability import get_logger
from shared.wechat.apps import AppKind

log = get_logger(__name__)

SESSIONS = Counter("siyu_gateway_sessions_issued_total", "Mini-program session tokens issued", ["member"])

_PROBLEM_SCHEMA = Problem.model_json_schema()


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: these statuses answer with an RFC 9457 problem."""
    return {
        s: {"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}}
        for s in statuses
    }


router = APIRouter(
    prefix="/api/v1",
    tags=["mini-program"],
    route_class=CappedBodyRoute,
    dependencies=[Depends(limit_client)],
    responses=_problems(413, 422, 429),
)


def _json(model: BaseModel, status: int) -> Response:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


# A sign-in answer holds a bearer token: replayed to a retry for this long only.
SIGN_IN_REPLAY = timedelta(minutes=5)


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionOut,
    dependencies=[Depends(limit_login)],
    responses=_problems(401, 403, 409, 503),
    summary="Sign in with a wx.login code",
)
async def create_session(body: SessionRequest, request: Request, deps: Deps, key: IdempotencyKey) -> Response:
    """401 when the code is invalid, expired or already used; 403 when WeChat blocked the login as
    high-risk (40226); 503 with `Retry-After` when WeChat is busy (-1, 45011)."""
    mini_program = runtime_of(request).settings.wechat_apps.first(AppKind.MINI_PROGRAM)

    async def sign_in() -> Response:
        login = await IdentityLogin(deps.upstreams).login(mini_program.appid, body.code)
        issued = deps.tokens.issue(login.member_id, mini_program.appid)
        SESSIONS.labels("new_member" if login.created else "known_member").inc()
        log.info("session.issued", member_id=str(login.member_id), created=login.created)
        return _json(SessionOut(token=issued.token, expires_at=issued.expires_at, member_id=login.member_id), 201)

    scope = f"ip:{client_address(request)}"
    # The stored answer holds a bearer token: keep it only as long as a client plausibly retries a
    # sign-in (the wx.login code is single-use, so this is what makes a lost answer recoverable).
    return await deps.idempotency.run(
        scope, key, fingerprint("POST", request.url.path, body), sign_in, replay_for=SIGN_IN_REPLAY
    )


@router.get("/me", response_model=MeOut, responses=_problems(401, 503), summary="The signed-in member")
async def me(member: CurrentMember, request: Request, deps: Deps) -> MeOut:
    """The caller's member, composed from identity. `tier` and `points_balance` are null until the
    commerce service exists."""
    response = await MemberRouter(deps.upstreams).forward(member, MEMBER_VIEW)
    view: MemberView = parse(MemberView, response, "identity")
    apps = runtime_of(request).settings.wechat_apps
    linked: dict[str, LinkedApp] = {}
    for identity in view.identities:
        app = apps.get(identity.appid)
        if app is not None:  # only the brand's own apps, as the apps file names them
            linked.setdefault(app.appid, LinkedApp(appid=app.appid, kind=app.kind.value))
    service_accounts = apps.of_kind(AppKind.OFFICIAL_ACCOUNT)
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


@router.post(
    "/me/phone",
    response_model=PhoneOut,
    responses=_problems(401, 409, 503),
    summary="Bind the phone number from a getPhoneNumber code",
)
async def bind_phone(
    body: PhoneRequest, member: CurrentMember, request: Request, deps: Deps, key: IdempotencyKey
) -> Response:
    """401 when the code is invalid or used; 409 when the number belongs to another member."""

    async def bind() -> Response:
        response = await MemberRouter(deps.upstreams).forward(
            member, BIND_PHONE, json_body={"appid": member.appid, "code": body.code}
        )
        binding: PhoneBinding = parse(PhoneBinding, response, "identity")
        return _json(PhoneOut(**binding.model_dump()), 200)

    scope = f"member:{member.member_id}"
    return await deps.idempotency.run(scope, key, fingerprint("POST", request.url.path, body), bind)


@router.post(
    "/events",
    status_code=202,
    response_model=EventsAccepted,
    dependencies=[Depends(limit_events)],
    responses=_problems(401, 503),
    summary="Record behaviour events (at most 50 per call)",
)
async def record_events(
    body: EventsRequest, member: CurrentMember, request: Request, deps: Deps, key: IdempotencyKey
) -> Response:
    """Behaviour events for the member's profile: `product_view`, `add_to_cart`, `share`,
    `article_read`; at most 50 per call, none older than 30 days. Identity recognises a retried
    event, so a resent batch is not counted twice."""

    async def record() -> Response:
        # The app is the session's, never the client's to claim.
        events = [{**e.model_dump(mode="json"), "appid": member.appid} for e in body.events]
        await MemberRouter(deps.upstreams).forward(member, RECORD_EVENTS, json_body={"events": events})
        return _json(EventsAccepted(accepted=len(events)), 202)

    scope = f"member:{member.member_id}"
    return await deps.idempotency.run(scope, key, fingerprint("POST", request.url.path, body), record)
