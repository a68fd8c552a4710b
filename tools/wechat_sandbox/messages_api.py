"""WeChat's messaging APIs: template lists, template messages, subscribe messages, subscription notices.

- ``GET /cgi-bin/template/get_all_private_template`` (service account's template messages)
- ``GET /wxaapi/newtmpl/gettemplate`` (subscription notices of a service account, subscribe messages of
  a mini-program)
- ``POST /cgi-bin/message/template/send`` → ``TEMPLATESENDJOBFINISH``
- ``POST /cgi-bin/message/subscribe/send`` (mini-program) → ``subscribe_msg_sent_event``
- ``POST /cgi-bin/message/subscribe/bizsend`` (service account) → ``subscribe_msg_sent_event``

Bodies, errcodes and pushes per research/wechat.md §2 and §5. The result pushes go to the gateway
after the answer, as WeChat sends them asynchronously. Rules (field types, authorisations) are in
``messages.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request

from shared.wechat.apps import AppKind, WeChatApp
from tools.wechat_sandbox.api import StateDep, app_of_token, json_body, json_doc
from tools.wechat_sandbox.control import PusherDep
from tools.wechat_sandbox.messages import (
    NEWTMPL_TYPE,
    SUBSCRIBE_LONG,
    SUBSCRIBE_ONCE,
    TEMPLATE,
    MessageCenter,
)
from tools.wechat_sandbox.push import CallbackPusher
from tools.wechat_sandbox.state import SandboxState, VirtualUser, WeChatApiError

router = APIRouter(tags=["WeChat API"])

OA = AppKind.OFFICIAL_ACCOUNT
MP = AppKind.MINI_PROGRAM
MINIPROGRAM_STATES = {"developer", "trial", "formal"}
LANGS = {"zh_CN", "en_US", "zh_HK", "zh_TW"}
# Template library metadata get_all_private_template reports (a beauty brand's industry).
PRIMARY_INDUSTRY = "消费品"
DEPUTY_INDUSTRY = "消费品"


def get_messages(request: Request) -> MessageCenter:
    return request.app.state.messages  # type: ignore[no-any-return]


MessagesDep = Annotated[MessageCenter, Depends(get_messages)]


# -- template lists ---------------------------------------------------------------------------------


@router.get("/cgi-bin/template/get_all_private_template")
async def get_all_private_template(state: StateDep, messages: MessagesDep, access_token: str | None = None) -> Any:
    """The service account's template-message templates: ``{"template_list": [{"template_id",
    "title", "primary_industry", "deputy_industry", "content", "example"}]}``. Service accounts only."""
    app = app_of_token(state, access_token, OA)
    return {
        "template_list": [
            {
                "template_id": t.template_id,
                "title": t.title,
                "primary_industry": PRIMARY_INDUSTRY,
                "deputy_industry": DEPUTY_INDUSTRY,
                "content": t.content,
                "example": t.example,
            }
            for t in messages.library.of_app(app.appid)
            if t.kind == TEMPLATE
        ]
    }


@router.get("/wxaapi/newtmpl/gettemplate")
async def get_subscribe_templates(state: StateDep, messages: MessagesDep, access_token: str | None = None) -> Any:
    """Subscription templates: ``{"errcode": 0, "errmsg": "ok", "data": [{"priTmplId", "title",
    "content", "example", "type"}]}``, type 2 one-time, 3 long-term. A service account's
    subscription notices or a mini-program's subscribe messages."""
    app = app_of_token(state, access_token, OA, MP)
    data = [
        {
            "priTmplId": t.template_id,
            "title": t.title,
            "content": t.content,
            "example": t.example,
            "type": NEWTMPL_TYPE[t.kind],
        }
        for t in messages.library.of_app(app.appid)
        if t.kind in NEWTMPL_TYPE
    ]
    return {"errcode": 0, "errmsg": "ok", "data": data}


# -- shared checks ----------------------------------------------------------------------------------


def _recipient(state: SandboxState, app: WeChatApp, body: dict[str, Any]) -> tuple[VirtualUser, str]:
    """``touser``: an openid of this app, else 40003 (another app's openid included)."""
    touser = body.get("touser")
    user = state.user_by_openid(app.appid, touser) if isinstance(touser, str) and touser else None
    if user is None:
        raise WeChatApiError(40003)
    return user, touser  # type: ignore[return-value]


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WeChatApiError(47001)
    return value


def _miniprogram(state: SandboxState, body: dict[str, Any]) -> dict[str, str] | None:
    """A ``miniprogram: {appid, pagepath}`` jump. The mini-program must be one of the brand's (linked)
    apps: else 40166. WxJava's ``usePath`` option sends ``path`` for ``pagepath``: both are read."""
    mp = body.get("miniprogram")
    if mp is None:
        return None
    if not isinstance(mp, dict):
        raise WeChatApiError(47001)
    appid = mp.get("appid")
    target = state.app(appid) if isinstance(appid, str) else None
    if target is None or target.kind is not MP:
        raise WeChatApiError(40166)
    pagepath = mp.get("pagepath", mp.get("path")) or ""
    if not isinstance(pagepath, str):
        raise WeChatApiError(40165)
    return {"appid": target.appid, "pagepath": pagepath}


def _jump(url: str | None, miniprogram: dict[str, str] | None) -> dict[str, Any]:
    jump: dict[str, Any] = {}
    if url:
        jump["url"] = url
    if miniprogram:
        jump["miniprogram"] = miniprogram
    return jump


def _event(state: SandboxState, app: WeChatApp, openid: str, event: str) -> dict[str, Any]:
    return {
        "ToUserName": app.original_id or app.appid,
        "FromUserName": openid,
        "CreateTime": int(state.now()),
        "MsgType": "event",
        "Event": event,
    }


def subscribe_event(
    state: SandboxState, app: WeChatApp, openid: str, event: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """A ``subscribe_msg_*_event``. XML nests one ``<List>`` per template in a per-event element; a
    mini-program's JSON puts ``List`` at the top, an object for one template and an array for
    several, with every value a string (official examples; research/wechat.md §2)."""
    payload = _event(state, app, openid, event)
    if app.push_format == "json":
        as_text = [{k: str(v) for k, v in item.items()} for item in items]
        return payload | {"List": as_text[0] if len(as_text) == 1 else as_text}
    container = {
        "subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
        "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
        "subscribe_msg_sent_event": "SubscribeMsgSentEvent",
    }[event]
    return payload | {container: {"List": items}}


async def push_later(pusher: CallbackPusher, app: WeChatApp, payload: dict[str, Any]) -> None:
    await pusher.send(pusher.prepare(app, payload))


def _sent_event(state: SandboxState, app: WeChatApp, openid: str, template_id: str, msgid: int) -> dict[str, Any]:
    item = {"TemplateId": template_id, "MsgID": msgid, "ErrorCode": 0, "ErrorStatus": "success"}
    return subscribe_event(state, app, openid, "subscribe_msg_sent_event", [item])


# -- sends ------------------------------------------------------------------------------------------

_TEMPLATE_EXAMPLE = {
    "touser": "OPENID",
    "template_id": "TEMPLATE_ID",
    "url": "https://brand.example/orders/1",
    "miniprogram": {"appid": "MINI_PROGRAM_APPID", "pagepath": "pages/order/detail?order_id=1"},
    "client_msg_id": "order-paid-1",
    "data": {"character_string1": {"value": "3705115058471208928"}},
}


@router.post("/cgi-bin/message/template/send", openapi_extra=json_doc(_TEMPLATE_EXAMPLE))
async def send_template_message(
    request: Request,
    state: StateDep,
    messages: MessagesDep,
    pusher: PusherDep,
    background: BackgroundTasks,
    access_token: str | None = None,
) -> Any:
    """A service account's template message → ``{"errcode": 0, "errmsg": "ok", "msgid"}``, then
    ``TEMPLATESENDJOBFINISH`` with that ``MsgID`` (``Status`` ``success``, or ``failed:user block``
    when the user blocked the account's template messages: nothing is delivered then).

    40003 ``touser`` not this account's openid; 40037 not one of its template-message templates;
    47003 a field missing, empty, too long or malformed for its type; 40166 ``miniprogram.appid`` not
    the brand's mini-program; 43004 the user does not follow. A ``client_msg_id`` already used for the
    same openid within 10 minutes sends nothing and answers the first send's msgid."""
    app = app_of_token(state, access_token, OA)
    body = await json_body(request)
    user, openid = _recipient(state, app, body)
    client_msg_id = _optional_text(body, "client_msg_id")
    now = state.now()
    if client_msg_id is not None and (first := messages.reentry(app.appid, openid, client_msg_id, now)) is not None:
        return {"errcode": 0, "errmsg": "ok", "msgid": first}
    template = messages.library.for_send(app.appid, body.get("template_id"), TEMPLATE)
    data = template.check_data(body.get("data"))
    jump = _jump(_optional_text(body, "url"), _miniprogram(state, body))
    if not user.is_following(app.appid):
        raise WeChatApiError(43004)
    msgid = messages.msgid()
    if client_msg_id is not None:
        messages.remember(app.appid, openid, client_msg_id, now, msgid)
    blocked = (app.appid, user.user_id) in messages.template_blocks
    if not blocked:
        state.deliver(
            user,
            {
                "appid": app.appid,
                "kind": "template",
                "template_id": template.template_id,
                "title": template.title,
                "data": data,
                "jump": jump,
                "msgid": str(msgid),
                "client_msg_id": client_msg_id,
                "opened_at": None,
                "opens": 0,
            },
        )
    finish = _event(state, app, openid, "TEMPLATESENDJOBFINISH") | {
        "MsgID": msgid,
        "Status": "failed:user block" if blocked else "success",
    }
    background.add_task(push_later, pusher, app, finish)
    return {"errcode": 0, "errmsg": "ok", "msgid": msgid}


def _choice(body: dict[str, Any], key: str, allowed: set[str], default: str) -> str:
    value = body.get(key)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise WeChatApiError(47003, f"argument invalid! {key} invalid")
    return value  # type: ignore[no-any-return]


_SUBSCRIBE_EXAMPLE = {
    "touser": "OPENID",
    "template_id": "TEMPLATE_ID",
    "page": "pages/order/detail?order_id=3705115058471208928",
    "miniprogram_state": "formal",
    "lang": "zh_CN",
    "data": {"character_string1": {"value": "3705115058471208928"}},
}


@router.post("/cgi-bin/message/subscribe/send", openapi_extra=json_doc(_SUBSCRIBE_EXAMPLE))
async def send_subscribe_message(
    request: Request,
    state: StateDep,
    messages: MessagesDep,
    pusher: PusherDep,
    background: BackgroundTasks,
    access_token: str | None = None,
) -> Any:
    """A mini-program's subscribe message → ``{"errcode": 0, "errmsg": "ok", "msgid"}``, then
    ``subscribe_msg_sent_event``. Spends one one-time authorisation (long-term templates: none).

    40003 ``touser``; 40037 not one of the mini-program's subscribe templates; 47003 a field, or
    ``miniprogram_state`` / ``lang`` outside their values; 43101 no authorisation left (never
    accepted, all spent, or turned off). ``page`` (with its query string) is the jump target."""
    app = app_of_token(state, access_token, MP)
    body = await json_body(request)
    user, openid = _recipient(state, app, body)
    template = messages.library.for_send(app.appid, body.get("template_id"), SUBSCRIBE_ONCE, SUBSCRIBE_LONG)
    data = template.check_data(body.get("data"))
    page = _optional_text(body, "page")
    miniprogram_state = _choice(body, "miniprogram_state", MINIPROGRAM_STATES, "formal")
    lang = _choice(body, "lang", LANGS, "zh_CN")
    messages.authorisations.consume(user.user_id, template)
    msgid = messages.msgid()
    state.deliver(
        user,
        {
            "appid": app.appid,
            "kind": "subscribe",
            "template_id": template.template_id,
            "title": template.title,
            "data": data,
            "jump": _jump(None, {"appid": app.appid, "pagepath": page} if page else None),
            "msgid": str(msgid),
            "miniprogram_state": miniprogram_state,
            "lang": lang,
            "opened_at": None,
            "opens": 0,
        },
    )
    background.add_task(push_later, pusher, app, _sent_event(state, app, openid, template.template_id, msgid))
    return {"errcode": 0, "errmsg": "ok", "msgid": msgid}


_BIZSEND_EXAMPLE = {
    "touser": "OPENID",
    "template_id": "TEMPLATE_ID",
    "page": "https://brand.example/points",
    "miniprogram": {"appid": "MINI_PROGRAM_APPID", "pagepath": "pages/points/index?campaign_id=7"},
    "data": {"number1": {"value": "128"}},
}


@router.post("/cgi-bin/message/subscribe/bizsend", openapi_extra=json_doc(_BIZSEND_EXAMPLE))
async def send_subscription_notice(
    request: Request,
    state: StateDep,
    messages: MessagesDep,
    pusher: PusherDep,
    background: BackgroundTasks,
    access_token: str | None = None,
) -> Any:
    """A service account's subscription notice → ``{"errcode": 0, "errmsg": "ok", "msgid"}``, then
    ``subscribe_msg_sent_event`` (XML) with the same ``MsgID``. One-time templates spend one
    authorisation; long-term ones need the user's standing acceptance.

    40003 ``touser``; 40037 not one of the account's subscription-notice templates (template-message
    ids included); 47003 a field; 40166 ``miniprogram.appid``; 43101 no authorisation. ``page`` is a
    web URL, ``miniprogram`` a mini-program page; with both the mini-program opens."""
    app = app_of_token(state, access_token, OA)
    body = await json_body(request)
    user, openid = _recipient(state, app, body)
    template = messages.library.for_send(app.appid, body.get("template_id"), SUBSCRIBE_ONCE, SUBSCRIBE_LONG)
    data = template.check_data(body.get("data"))
    jump = _jump(_optional_text(body, "page"), _miniprogram(state, body))
    messages.authorisations.consume(user.user_id, template)
    msgid = messages.msgid()
    state.deliver(
        user,
        {
            "appid": app.appid,
            "kind": "subscribe_notice",
            "template_id": template.template_id,
            "title": template.title,
            "data": data,
            "jump": jump,
            "msgid": str(msgid),
            "opened_at": None,
            "opens": 0,
        },
    )
    background.add_task(push_later, pusher, app, _sent_event(state, app, openid, template.template_id, msgid))
    return {"errcode": 0, "errmsg": "ok", "msgid": msgid}
