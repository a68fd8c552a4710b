"""The subset of ``api.weixin.qq.com`` Siyu calls: same paths, bodies and error codes.

WeChat answers errors with HTTP 200 and ``{"errcode", "errmsg"}``; so does every route here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from shared.wechat.apps import AppKind, WeChatApp
from tools.wechat_sandbox.state import SandboxState, VirtualUser, WeChatApiError

router = APIRouter(tags=["WeChat API"])

OK = {"errcode": 0, "errmsg": "ok"}


def get_state(request: Request) -> SandboxState:
    return request.app.state.sandbox  # type: ignore[no-any-return]


StateDep = Annotated[SandboxState, Depends(get_state)]


def app_of_token(state: SandboxState, access_token: str | None, *kinds: AppKind) -> WeChatApp:
    """The app behind an access token (41001/40001/42001), or 48001 when the API is not for its kind."""
    token = state.tokens.check(access_token)
    app = state.app(token.appid)
    if app is None or (kinds and app.kind not in kinds):
        raise WeChatApiError(48001)
    return app


async def json_body(request: Request) -> dict[str, Any]:
    """A POSTed JSON object: 44002 when empty, 47001 when not a JSON object (WeChat's answers)."""
    raw = await request.body()
    if not raw.strip():
        raise WeChatApiError(44002)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting
        raise WeChatApiError(47001) from None
    if not isinstance(body, dict):
        raise WeChatApiError(47001)
    return body


def json_doc(example: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a route that reads its JSON body itself (to answer WeChat's errcodes, not 422)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        }
    }


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
    if user.unionid_visible(app.appid):
        info["unionid"] = user.unionid
    info |= {
        "remark": "",
        "groupid": 0,
        "tagid_list": state.book(app.appid).tags_of(user.user_id),
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
    if user.unionid_visible(app.appid):
        out["unionid"] = user.unionid
    return out


@router.post(
    "/wxa/business/getuserphonenumber",
    openapi_extra=json_doc({"code": "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144"}),
)
async def get_user_phone_number(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Exchange a getPhoneNumber button code (from ``POST /sandbox/users/{id}/phone-code``) for the
    user's number. Mini-program tokens only (48001 otherwise); 41008 no code; 40029 unknown, expired
    (5 min) or another app's code; 40163 already used; 40003 ``openid`` given and not the code's user."""
    app = app_of_token(state, access_token, AppKind.MINI_PROGRAM)
    body = await json_body(request)
    user, code = state.redeem_phone_code(app.appid, body.get("code"), body.get("openid"))
    return {"errcode": 0, "errmsg": "ok", "phone_info": phone_info(user, app.appid, int(code.issued_at))}


def phone_info(user: VirtualUser, appid: str, timestamp: int) -> dict[str, Any]:
    cc = user.country_code
    return {
        # "用户绑定的手机号（国外手机号会有区号）": the area code shows only outside mainland China.
        "phoneNumber": user.phone if cc == "86" else f"+{cc}{user.phone}",
        "purePhoneNumber": user.phone,
        # The doc's table says string and real answers carry "86"; its example shows a bare 86.
        "countryCode": cc,
        "watermark": {"timestamp": timestamp, "appid": appid},
    }
