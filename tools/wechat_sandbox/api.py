"""The subset of ``api.weixin.qq.com`` Siyu calls: same paths, bodies and error codes.

WeChat answers errors with HTTP 200 and ``{"errcode", "errmsg"}``; so does every route here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from shared.wechat.apps import AppKind
from tools.wechat_sandbox.state import SandboxState, WeChatApiError

router = APIRouter(tags=["WeChat API"])


def get_state(request: Request) -> SandboxState:
    return request.app.state.sandbox  # type: ignore[no-any-return]


StateDep = Annotated[SandboxState, Depends(get_state)]


@router.get("/cgi-bin/token")
async def get_token(
    state: StateDep,
    grant_type: str | None = None,
    appid: str | None = None,
    secret: str | None = None,
) -> Any:
    if grant_type != "client_credential":
        raise WeChatApiError(40002)
    app = state.authenticate_app(appid, secret)
    token = state.tokens.issue(app.appid)
    return {"access_token": token.value, "expires_in": token.expires_in(state.now())}


@router.get("/cgi-bin/stable_token", include_in_schema=False)
async def stable_token_requires_post() -> Any:
    raise WeChatApiError(43002)


@router.post("/cgi-bin/stable_token")
async def post_stable_token(request: Request, state: StateDep) -> Any:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise WeChatApiError(47001) from None
    if not isinstance(body, dict):
        raise WeChatApiError(47001)
    if body.get("grant_type") != "client_credential":
        raise WeChatApiError(40002)
    app = state.authenticate_app(body.get("appid"), body.get("secret"))
    token = state.tokens.stable(app.appid, force_refresh=body.get("force_refresh") is True)
    return {"access_token": token.value, "expires_in": token.expires_in(state.now())}


@router.get("/cgi-bin/user/info")
async def user_info(
    state: StateDep,
    access_token: str | None = None,
    openid: str | None = None,
    lang: Annotated[str, Query()] = "zh_CN",
) -> Any:
    token = state.tokens.check(access_token)
    app = state.app(token.appid)
    if app is None or app.kind is not AppKind.OFFICIAL_ACCOUNT:
        raise WeChatApiError(48001)
    user = state.user_by_openid(app.appid, openid) if openid else None
    if user is None:
        raise WeChatApiError(40003)
    assert openid is not None
    follow = user.follows.get(app.appid)
    if follow is None or not follow.following:
        return {"subscribe": 0, "openid": openid}
    info: dict[str, Any] = {
        "subscribe": 1,
        "openid": openid,
        "language": lang if lang in ("zh_CN", "zh_TW", "en") else "zh_CN",
        "subscribe_time": follow.subscribe_time,
    }
    if user.unionid_bound:
        info["unionid"] = user.unionid
    info |= {
        "remark": "",
        "groupid": 0,
        "tagid_list": [],
        "subscribe_scene": follow.subscribe_scene,
        "qr_scene": follow.qr_scene,
        "qr_scene_str": follow.qr_scene_str,
    }
    return info


@router.get("/sns/jscode2session")
async def jscode2session(
    state: StateDep,
    appid: str | None = None,
    secret: str | None = None,
    js_code: str | None = None,
    grant_type: str | None = None,
) -> Any:
    if grant_type != "authorization_code":
        raise WeChatApiError(40002)
    app = state.authenticate_app(appid, secret)
    user, session_key = state.redeem_login_code(app, js_code)
    # Like WeChat: success carries no errcode at all, and unionid only when the user is bound.
    out: dict[str, Any] = {"session_key": session_key, "openid": user.openids[app.appid]}
    if user.unionid_bound:
        out["unionid"] = user.unionid
    return out
