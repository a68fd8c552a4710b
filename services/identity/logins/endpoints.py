"""``POST /internal/logins``: a mini-program ``wx.login`` code exchanged for the member."""

from __future__ import annotations

from fastapi import APIRouter

from services.identity.deps import Deps
from services.identity.logins.schemas import LoginRequest, LoginResponse
from services.identity.logins.service import LoginService
from shared.app import InternalOnly
from shared.errors import UnknownApp
from shared.wechat.apps import AppKind

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["logins"])


@router.post("/logins", response_model=LoginResponse)
async def login(body: LoginRequest, deps: Deps) -> LoginResponse:
    """Exchange a mini-program ``wx.login`` code: resolve or create the member.

    The ``session_key`` is stored encrypted and never returned. 401 ``invalid-code`` for a bad,
    expired or reused code (40029/40163), 403 for a login WeChat blocked (40226), 503 with
    ``Retry-After`` when WeChat is busy (-1, 45011).
    """
    if deps.app_of_kind(body.appid, AppKind.MINI_PROGRAM) is None:
        raise UnknownApp(f"{body.appid} is not a mini-program of this brand")
    return await LoginService(deps).login(body.appid, body.code)
