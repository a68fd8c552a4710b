"""``POST /api/v1/sessions``: a ``wx.login`` code becomes the gateway's own session token."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from services.gateway.deps import CappedBodyRoute, ClientAddress, Deps, IdempotencyKey, limit_sign_in
from services.gateway.idempotency.service import fingerprint
from services.gateway.sessions.schemas import SessionOut, SessionRequest, problem_responses
from services.gateway.sessions.service import SignIn
from shared.observability import get_logger
from shared.wechat.apps import AppKind

log = get_logger(__name__)

SESSIONS = Counter("siyu_gateway_sessions_issued_total", "Mini-program session tokens issued", ["member"])

# A sign-in answer holds a bearer token: replayed to a retry for this long only (the wx.login code
# is single use, so this is what makes a lost answer recoverable).
SIGN_IN_REPLAY = timedelta(minutes=5)

router = APIRouter(
    prefix="/api/v1", tags=["mini-program"], route_class=CappedBodyRoute, responses=problem_responses(413, 422, 429)
)


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionOut,
    dependencies=[Depends(limit_sign_in)],
    responses=problem_responses(401, 403, 409, 503),
    summary="Sign in with a wx.login code",
)
async def create_session(
    body: SessionRequest, request: Request, address: ClientAddress, deps: Deps, key: IdempotencyKey
) -> Response:
    """401 when the code is invalid, expired or already used; 403 when WeChat blocked the login as
    high-risk (40226); 503 with `Retry-After` when WeChat is busy (-1, 45011)."""
    mini_program = deps.apps.first(AppKind.MINI_PROGRAM)

    async def sign_in() -> Response:
        login, issued = await SignIn(deps.upstreams, deps.tokens).sign_in(mini_program.appid, body.code)
        SESSIONS.labels("new_member" if login.created else "known_member").inc()
        log.info("session.issued", member_id=str(login.member_id), created=login.created)
        out = SessionOut(token=issued.token, expires_at=issued.expires_at, member_id=login.member_id)
        return JSONResponse(out.model_dump(mode="json"), status_code=201)

    request_hash = fingerprint("POST", request.url.path, body)
    return await deps.idempotency.run(f"ip:{address}", key, request_hash, sign_in, replay_for=SIGN_IN_REPLAY)
