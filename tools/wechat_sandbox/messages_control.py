"""Control routes for messaging: the template library, the user's subscription choices, template
blocks, and WeChat's API limits. Inbox and open are in ``control.py`` with the user's other views."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import Field

from shared.wechat.apps import AppKind, WeChatApp
from tools.wechat_sandbox.api import StateDep
from tools.wechat_sandbox.control import PusherDep, Retry, _app, _Body, _push, _user
from tools.wechat_sandbox.messages import (
    MP_POPUP_MAX_TEMPLATES,
    SUBSCRIBE_LONG,
    SUBSCRIBE_ONCE,
    MessageCenter,
    Template,
)
from tools.wechat_sandbox.messages_api import MessagesDep, subscribe_event

router = APIRouter(prefix="/sandbox", tags=["Sandbox control"])

OA = AppKind.OFFICIAL_ACCOUNT
MP = AppKind.MINI_PROGRAM


class PopupRequest(_Body):
    appid: str
    results: dict[str, Literal["accept", "reject"]] = Field(min_length=1)
    # A service account's popup comes from an H5 page (1, the default) or an article (2); a
    # mini-program's is always 0.
    popup_scene: Literal[1, 2] | None = None


class ChangeRequest(_Body):
    appid: str
    template_ids: list[str] = Field(min_length=1, max_length=100)


class TemplateBlock(_Body):
    appid: str
    blocked: bool = True


class NewLimit(_Body):
    path: str = Field(pattern=r"^/[^?#]*$", max_length=256)
    per_second: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)


def _subscription_template(messages: MessageCenter, app: WeChatApp, template_id: str) -> Template:
    template = messages.library.get(app.appid, template_id)
    if template is None or template.kind not in (SUBSCRIBE_ONCE, SUBSCRIBE_LONG):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{template_id} is not a subscription template of {app.appid}"
        )
    return template


# -- templates --------------------------------------------------------------------------------------


@router.get("/templates")
async def templates(state: StateDep, messages: MessagesDep, appid: str | None = None) -> list[dict[str, Any]]:
    """The template library: ``[{"template_id", "title", "kind" (template, subscribe_once,
    subscribe_long), "fields": [{"key", "max_len"}], "name", "appid"}]`` of one app, or of all."""
    if appid is not None:
        _app(state, appid)
    apps = [appid] if appid is not None else [a.appid for a in state.apps.apps]
    return [t.describe() for a in apps for t in messages.library.of_app(a)]


# -- the user's choices -----------------------------------------------------------------------------


@router.post("/users/{user_id}/subscribe-popup")
async def subscribe_popup(
    state: StateDep, messages: MessagesDep, pusher: PusherDep, user_id: str, body: PopupRequest, retry: Retry = False
) -> dict[str, Any]:
    """Play ``wx.requestSubscribeMessage`` (mini-program) or a service account's subscribe popup: each
    ``accept`` of a one-time template allows one more send, an ``accept`` of a long-term template
    allows sends until the user turns it off (a ``reject`` turns it off). Pushes
    ``subscribe_msg_popup_event`` and answers the push answer plus the user's ``subscriptions``."""
    user = _user(state, user_id)
    app = _app(state, body.appid, OA, MP)
    if app.kind is MP:
        if len(body.results) > MP_POPUP_MAX_TEMPLATES:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "wx.requestSubscribeMessage takes at most 3 templates")
        if body.popup_scene is not None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "a mini-program's popup scene is always 0")
    chosen = [(_subscription_template(messages, app, tid), answer) for tid, answer in body.results.items()]
    for template, answer in chosen:
        messages.authorisations.popup(user.user_id, template, answer == "accept")
    scene = 0 if app.kind is MP else body.popup_scene or 1
    items = [
        {"TemplateId": t.template_id, "SubscribeStatusString": answer, "PopupScene": scene} for t, answer in chosen
    ]
    payload = subscribe_event(state, app, user.openids[app.appid], "subscribe_msg_popup_event", items)
    pushed = await _push(pusher, app, payload, retry=retry)
    return pushed | {"subscriptions": messages.authorisations.describe(app.appid, user.user_id, messages.library)}


@router.post("/users/{user_id}/subscribe-change")
async def subscribe_change(
    state: StateDep, messages: MessagesDep, pusher: PusherDep, user_id: str, body: ChangeRequest, retry: Retry = False
) -> dict[str, Any]:
    """Play the user rejecting templates in the notification settings (服务通知 → 拒收): no more
    sends of them until a new popup acceptance. Pushes ``subscribe_msg_change_event`` (WeChat pushes
    only rejections) and answers like ``subscribe-popup``."""
    user = _user(state, user_id)
    app = _app(state, body.appid, OA, MP)
    chosen = [_subscription_template(messages, app, tid) for tid in dict.fromkeys(body.template_ids)]
    for template in chosen:
        messages.authorisations.turn_off(user.user_id, template)
    items = [{"TemplateId": t.template_id, "SubscribeStatusString": "reject"} for t in chosen]
    payload = subscribe_event(state, app, user.openids[app.appid], "subscribe_msg_change_event", items)
    pushed = await _push(pusher, app, payload, retry=retry)
    return pushed | {"subscriptions": messages.authorisations.describe(app.appid, user.user_id, messages.library)}


@router.get("/users/{user_id}/subscriptions")
async def subscriptions(state: StateDep, messages: MessagesDep, user_id: str, appid: str) -> list[dict[str, Any]]:
    """The user's standing with each subscription template of ``appid`` they ever answered:
    ``[{"template_id", "name", "kind", "remaining", "long_term"}]``."""
    user = _user(state, user_id)
    app = _app(state, appid, OA, MP)
    return messages.authorisations.describe(app.appid, user.user_id, messages.library)


@router.post("/users/{user_id}/template-block")
async def template_block(state: StateDep, messages: MessagesDep, user_id: str, body: TemplateBlock) -> dict[str, Any]:
    """Play the user blocking (``blocked: true``) or unblocking a service account's template messages:
    while blocked, template/send still answers ok but delivers nothing and ``TEMPLATESENDJOBFINISH``
    says ``failed:user block``."""
    user = _user(state, user_id)
    app = _app(state, body.appid, OA)
    key = (app.appid, user.user_id)
    if body.blocked:
        messages.template_blocks.add(key)
    else:
        messages.template_blocks.discard(key)
    return {"user_id": user.user_id, "appid": app.appid, "blocked": body.blocked}


# -- limits -----------------------------------------------------------------------------------------


@router.post("/limits", status_code=status.HTTP_201_CREATED)
async def set_limit(messages: MessagesDep, body: NewLimit) -> dict[str, Any]:
    """Make a WeChat API path enforce WeChat's limits, per app (the access token's): 45011 when a
    call would make more than ``per_second`` accepted calls within one second (a rolling window),
    45009 once ``per_day`` calls were accepted on the Beijing day. Replaces that path's limit and
    starts its counters afresh."""
    if body.per_second is None and body.per_day is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a limit needs per_second, per_day, or both")
    if body.path.startswith("/sandbox"):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "limits apply to WeChat API paths, not /sandbox")
    limit = messages.limits.set(body.path, body.per_second, body.per_day)
    return {limit.path: limit.describe()}


@router.get("/limits")
async def list_limits(messages: MessagesDep) -> dict[str, Any]:
    """``{"<path>": {"calls", "rejected", "peak_per_second", "per_second", "per_day", "apps":
    {"<appid>": {"calls", "rejected", "peak_per_second", "used_today"}}}}``; ``peak_per_second`` is
    the most calls one app had accepted within one clock second."""
    return messages.limits.describe()


@router.delete("/limits", status_code=status.HTTP_204_NO_CONTENT)
async def clear_limits(messages: MessagesDep) -> None:
    messages.limits.clear()
