"""The control API (``/sandbox/...``): make virtual users act, and see what WeChat sent or showed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from shared.wechat.apps import AppKind, WeChatApp
from tools.wechat_sandbox import kf
from tools.wechat_sandbox.api import StateDep
from tools.wechat_sandbox.messages import open_target
from tools.wechat_sandbox.oa import with_sub_buttons
from tools.wechat_sandbox.push import CallbackPusher, PushMode
from tools.wechat_sandbox.state import Fault, SandboxState, VirtualUser

router = APIRouter(prefix="/sandbox", tags=["Sandbox control"])


def get_pusher(request: Request) -> CallbackPusher:
    return request.app.state.pusher  # type: ignore[no-any-return]


PusherDep = Annotated[CallbackPusher, Depends(get_pusher)]
# WeChat re-sends a push when the gateway times out or fails; off by default so a control call
# makes exactly one request unless the caller asks for the retry behaviour.
Retry = Annotated[
    bool, Query(description="re-send the identical push on a timeout or 5xx, up to 3 attempts, like WeChat")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(_Body):
    nickname: str | None = None
    unionid_bound: bool = True
    phone: str | None = Field(default=None, pattern=r"^[0-9]{5,15}$", description="without the area code")
    country_code: str = Field(default="86", pattern=r"^[0-9]{1,4}$")


class AppRef(_Body):
    appid: str


class OptionalAppRef(_Body):
    appid: str | None = None


class FollowRequest(AppRef):
    scene: str | int | None = None


class TextMessage(AppRef):
    text: str = Field(min_length=1)


class MenuClick(AppRef):
    key: str = Field(min_length=1)


class RawPush(AppRef):
    payload: dict[str, Any]
    mode: Literal["safe", "compat", "plain"] | None = None
    repeat: int = Field(default=1, ge=1, le=100)


class OpenRequest(_Body):
    seq: int = Field(ge=1)


class NewFault(_Body):
    path: str = Field(pattern=r"^/")
    errcode: int | None = None
    errmsg: str | None = None
    delay_ms: int = Field(default=0, ge=0, le=60_000)
    count: int = Field(default=1, ge=1)


# -- helpers ----------------------------------------------------------------------------------


def _user(state: SandboxState, user_id: str) -> VirtualUser:
    user = state.user(user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id}")
    return user


def _app(state: SandboxState, appid: str, *kinds: AppKind) -> WeChatApp:
    app = state.app(appid)
    if app is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no app {appid} in the apps file")
    if kinds and app.kind not in kinds:
        allowed = " or ".join(k.value for k in kinds)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"app {appid} is a {app.kind.value}, not {allowed}")
    return app


def _envelope(state: SandboxState, app: WeChatApp, user: VirtualUser, msg_type: str) -> dict[str, Any]:
    return {
        "ToUserName": app.original_id or app.appid,
        "FromUserName": user.openids[app.appid],
        "CreateTime": int(state.now()),
        "MsgType": msg_type,
    }


async def _push(
    pusher: CallbackPusher, app: WeChatApp, payload: dict[str, Any], *, retry: bool, mode: PushMode | None = None
) -> dict[str, Any]:
    try:
        prepared = pusher.prepare(app, payload, mode)
    except (ValueError, TypeError) as exc:  # no key for an encrypted mode; an unrenderable payload
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    outcome = await pusher.send(prepared, retry=retry)
    return outcome.answer()


# -- users ------------------------------------------------------------------------------------


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(state: StateDep, body: NewUser | None = None) -> dict[str, Any]:
    """A virtual user with an openid per app. ``phone`` (digits, no area code) and ``country_code``
    (default 86) set the number getPhoneNumber reveals; without them the user gets a seeded 138xxxxxxxx.
    ``unionid_bound: false`` makes every app hide the unionid until ``bind-unionid``."""
    body = body or NewUser()
    user = state.create_user(body.nickname, body.unionid_bound, body.phone, body.country_code)
    return {
        "user_id": user.user_id,
        "unionid": user.unionid,
        "openids": dict(user.openids),
        "nickname": user.nickname,
        "unionid_bound": user.unionid_bound,
        "phone": user.phone,
        "country_code": user.country_code,
    }


@router.get("/users")
async def list_users(state: StateDep) -> list[dict[str, Any]]:
    return [u.describe() for u in state.users.values()]


@router.get("/users/{user_id}")
async def get_user(state: StateDep, user_id: str) -> dict[str, Any]:
    return _user(state, user_id).describe()


@router.post("/users/{user_id}/follow")
async def follow(
    state: StateDep, pusher: PusherDep, user_id: str, body: FollowRequest, retry: Retry = False
) -> dict[str, Any]:
    user = _user(state, user_id)
    app = _app(state, body.appid, AppKind.OFFICIAL_ACCOUNT)
    scene = None if body.scene in (None, "") else str(body.scene)
    payload = _envelope(state, app, user, "event")
    if not user.is_following(app.appid):
        state.follow(user, app.appid, scene)
        state.kf.open(app.appid, user.user_id, kf.FOLLOW)
        payload["Event"] = "subscribe"
        if scene is not None:
            payload["EventKey"] = f"qrscene_{scene}"
            payload["Ticket"] = state.ids.qr_ticket()
    elif scene is not None:
        # Scanning a parametric QR code of an account one already follows: SCAN, no prefix.
        state.kf.open(app.appid, user.user_id, kf.SCAN)
        payload["Event"] = "SCAN"
        payload["EventKey"] = scene
        payload["Ticket"] = state.ids.qr_ticket()
    else:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{user_id} already follows {app.appid}")
    return await _push(pusher, app, payload, retry=retry)


@router.post("/users/{user_id}/unfollow")
async def unfollow(
    state: StateDep, pusher: PusherDep, user_id: str, body: AppRef, retry: Retry = False
) -> dict[str, Any]:
    user = _user(state, user_id)
    app = _app(state, body.appid, AppKind.OFFICIAL_ACCOUNT)
    if not user.is_following(app.appid):
        raise HTTPException(status.HTTP_409_CONFLICT, f"{user_id} does not follow {app.appid}")
    state.unfollow(user, app.appid)
    payload = _envelope(state, app, user, "event") | {"Event": "unsubscribe"}
    return await _push(pusher, app, payload, retry=retry)


@router.post("/users/{user_id}/messages")
async def send_text(
    state: StateDep, pusher: PusherDep, user_id: str, body: TextMessage, retry: Retry = False
) -> dict[str, Any]:
    user = _user(state, user_id)
    app = _app(state, body.appid, AppKind.OFFICIAL_ACCOUNT, AppKind.MINI_PROGRAM)
    if app.kind is AppKind.OFFICIAL_ACCOUNT and not user.is_following(app.appid):
        raise HTTPException(status.HTTP_409_CONFLICT, f"{user_id} must follow {app.appid} to message it")
    payload = _envelope(state, app, user, "text") | {"Content": body.text, "MsgId": state.ids.msg_id()}
    state.kf.open(app.appid, user.user_id, kf.MESSAGE)
    return await _push(pusher, app, payload, retry=retry)


@router.post("/users/{user_id}/menu-click")
async def menu_click(
    state: StateDep, pusher: PusherDep, user_id: str, body: MenuClick, retry: Retry = False
) -> dict[str, Any]:
    user = _user(state, user_id)
    app = _app(state, body.appid, AppKind.OFFICIAL_ACCOUNT)
    if not user.is_following(app.appid):
        raise HTTPException(status.HTTP_409_CONFLICT, f"{user_id} must follow {app.appid} to use its menu")
    payload = _envelope(state, app, user, "event") | {"Event": "CLICK", "EventKey": body.key}
    state.kf.open(app.appid, user.user_id, kf.MENU_CLICK)
    return await _push(pusher, app, payload, retry=retry)


@router.post("/users/{user_id}/login-code")
async def login_code(state: StateDep, user_id: str, body: AppRef) -> dict[str, str]:
    user = _user(state, user_id)
    app = _app(state, body.appid, AppKind.MINI_PROGRAM)
    return {"code": state.issue_login_code(user, app.appid).code}


@router.post("/users/{user_id}/phone-code")
async def phone_code(state: StateDep, user_id: str, body: AppRef) -> dict[str, str]:
    """``{"code"}`` as a mini-program's getPhoneNumber button hands it out: single use, 5 minutes,
    for ``POST /wxa/business/getuserphonenumber`` with that mini-program's token."""
    user = _user(state, user_id)
    app = _app(state, body.appid, AppKind.MINI_PROGRAM)
    return {"code": state.issue_phone_code(user, app.appid).code}


@router.post("/users/{user_id}/bind-unionid")
async def bind_unionid(state: StateDep, user_id: str, body: OptionalAppRef | None = None) -> dict[str, Any]:
    """Bind the user's apps to the Open Platform account (all of them, or only ``appid``): from now on
    user/info and jscode2session of those apps return the unionid. Answers the user."""
    user = _user(state, user_id)
    appid = body.appid if body else None
    if appid is not None:
        _app(state, appid)
    state.bind_unionid(user, appid)
    return user.describe()


@router.get("/users/{user_id}/inbox")
async def inbox(state: StateDep, user_id: str) -> list[dict[str, Any]]:
    """Everything WeChat showed the user, oldest first: ``{"seq", "delivered_at", "kind" (template,
    subscribe, subscribe_notice, customer_service), "appid", "template_id"?, "data", "jump": {"url"?,
    "miniprogram"?: {"appid", "pagepath"}}, "opened_at", "opens", ...}``; README.md lists each kind's
    extra fields."""
    return list(_user(state, user_id).inbox)


@router.post("/users/{user_id}/open")
async def open_message(state: StateDep, user_id: str, body: OpenRequest) -> dict[str, Any]:
    """Play the user tapping inbox message ``seq``: answers what opened — ``{"opened": "miniprogram",
    "miniprogram": {"appid", "pagepath"}, "pagepath", "path", "query"}`` with the page's query string
    as sent (the mini-program wins when a message has both jumps), or ``{"opened": "url", "url",
    "query"}`` — and records the open on the entry (``opened_at`` the first time, ``opens``). 404 no
    such message; 409 a message without a jump target."""
    user = _user(state, user_id)
    entry = next((m for m in user.inbox if m.get("seq") == body.seq), None)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{user_id} has no message {body.seq}")
    target = open_target(entry)
    if target is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"message {body.seq} has no jump target")
    now = int(state.now())
    if entry.get("opened_at") is None:
        entry["opened_at"] = now
    entry["opens"] = int(entry.get("opens") or 0) + 1
    return {"seq": body.seq, "kind": entry.get("kind"), "appid": entry.get("appid"), "opened_at": now, **target}


@router.get("/users/{user_id}/menu")
async def user_menu(state: StateDep, user_id: str, appid: str) -> dict[str, Any]:
    """The menu the user sees in an official account: ``{"button", "menuid", "conditional",
    "matchrule"}`` (the newest conditional menu matching the user's tags, else the default menu), or
    ``{"button": null}`` when the account has no menu."""
    user = _user(state, user_id)
    app = _app(state, appid, AppKind.OFFICIAL_ACCOUNT)
    book = state.book(app.appid)
    seen = book.menu_for(user.user_id)
    if seen is None:
        return {"button": None, "menuid": None, "conditional": False, "matchrule": None}
    buttons, menu = seen
    return {
        "button": with_sub_buttons(buttons),
        "menuid": menu.menuid if menu else book.default_menuid,
        "conditional": menu is not None,
        "matchrule": menu.matchrule if menu else None,
    }


@router.get("/users/{user_id}/service-window")
async def service_window(state: StateDep, user_id: str, appid: str) -> list[dict[str, Any]]:
    """The open customer-service grants of (app, user): scene, opened_at, expires_in, quota, used."""
    user = _user(state, user_id)
    app = _app(state, appid, AppKind.OFFICIAL_ACCOUNT, AppKind.MINI_PROGRAM)
    return state.kf.describe(app.appid, user.user_id)


# -- raw pushes and the push log --------------------------------------------------------------


@router.post("/push")
async def raw_push(state: StateDep, pusher: PusherDep, body: RawPush, retry: Retry = False) -> list[dict[str, Any]]:
    """Push an arbitrary payload; ``repeat`` re-sends the identical bytes, as a WeChat re-delivery."""
    app = _app(state, body.appid)
    payload = {"ToUserName": app.original_id or app.appid, "CreateTime": int(state.now()), **body.payload}
    try:
        prepared = pusher.prepare(app, payload, body.mode)
    except (ValueError, TypeError) as exc:  # no key for an encrypted mode; an unrenderable payload
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return [(await pusher.send(prepared, retry=retry)).answer() for _ in range(body.repeat)]


@router.get("/pushes")
async def pushes(state: StateDep, appid: str | None = None) -> list[dict[str, Any]]:
    return [p for p in state.pushes if appid is None or p["appid"] == appid]


# -- faults -----------------------------------------------------------------------------------


@router.post("/faults", status_code=status.HTTP_201_CREATED)
async def add_fault(state: StateDep, body: NewFault) -> dict[str, Any]:
    if body.errcode is None and body.delay_ms == 0:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a fault needs an errcode, a delay_ms, or both")
    fault = state.add_fault(Fault(body.path, body.errcode, body.errmsg, body.delay_ms, body.count))
    return fault.describe()


@router.get("/faults")
async def list_faults(state: StateDep) -> list[dict[str, Any]]:
    return [f.describe() for pending in state.faults.values() for f in pending]


@router.delete("/faults", status_code=status.HTTP_204_NO_CONTENT)
async def clear_faults(state: StateDep) -> None:
    state.faults.clear()
