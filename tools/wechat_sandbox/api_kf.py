"""``POST /cgi-bin/message/custom/send``: customer-service messages inside the 48-hour window.

Bodies per the official "发送客服消息" docs (service account: doc/service/api/customer/message/
api_sendcustommessage; mini-program: miniprogram/dev/server/API/kf-mgnt/kf-message/api_sendcustommessage).
The window rules are in ``kf.py``. A delivered message lands in the user's inbox.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from shared.wechat.apps import AppKind, WeChatApp
from tools.wechat_sandbox.api import OK, StateDep, app_of_token, json_body, json_doc
from tools.wechat_sandbox.state import WeChatApiError

router = APIRouter(tags=["WeChat API"])

# msgtypes each kind of app may send (service account: text image voice video music news mpnews
# mpnewsarticle msgmenu wxcard miniprogrampage; mini-program: text image link miniprogrampage).
OA_TYPES = {
    "text",
    "image",
    "voice",
    "video",
    "music",
    "news",
    "mpnews",
    "mpnewsarticle",
    "msgmenu",
    "wxcard",
    "miniprogrampage",
}
MP_TYPES = {"text", "image", "link", "miniprogrampage"}

_EXAMPLE = {"touser": "OPENID", "msgtype": "text", "text": {"content": "Hello World"}}


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_content(app: WeChatApp, msgtype: str, content: dict[str, Any]) -> dict[str, Any] | None:
    """Validate one message body; answer its jump target (what tapping the message opens), if any."""
    if msgtype == "text":
        if not _nonempty(content.get("content")):
            raise WeChatApiError(44004)
        return None
    if msgtype in ("image", "voice", "video") and not _nonempty(content.get("media_id")):
        raise WeChatApiError(40007)
    if msgtype == "news":
        articles = content.get("articles")
        if not isinstance(articles, list) or not articles:
            raise WeChatApiError(44003)
        if len(articles) > 1:  # one article per news message since 2018-10-12: more → 45008
            raise WeChatApiError(45008)
        article = articles[0] if isinstance(articles[0], dict) else {}
        return {"url": article.get("url")} if article.get("url") else None
    if msgtype == "link":
        if not all(_nonempty(content.get(k)) for k in ("title", "url")):
            raise WeChatApiError(47001)
        return {"url": content["url"]}
    if msgtype == "miniprogrampage":
        # Service accounts name the mini-program (appid); a mini-program sends its own pages.
        required = ["title", "pagepath", "thumb_media_id"]
        if app.kind is AppKind.OFFICIAL_ACCOUNT:
            required.append("appid")
        if not all(_nonempty(content.get(k)) for k in required):
            raise WeChatApiError(47001)
        return {"miniprogram": {"appid": content.get("appid") or app.appid, "pagepath": content["pagepath"]}}
    return None


@router.post("/cgi-bin/message/custom/send", openapi_extra=json_doc(_EXAMPLE))
async def send_custom_message(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Send a customer-service message to a user who interacted within the window.

    Service-account and mini-program tokens (48001 otherwise). 40003 ``touser`` is not this app's
    openid; 40008 msgtype not allowed for the app; 44004 empty text; 44003 no article / 45008 more
    than one; 40007 missing media_id; 47001 malformed body or missing field; 45015 no open window
    (including a service account the user does not follow: "subscription is canceled"); 45047 the
    window's quota is spent. Delivered messages appear in ``GET /sandbox/users/{id}/inbox``."""
    app = app_of_token(state, access_token, AppKind.OFFICIAL_ACCOUNT, AppKind.MINI_PROGRAM)
    body = await json_body(request)
    touser = body.get("touser")
    user = state.user_by_openid(app.appid, touser) if isinstance(touser, str) else None
    if user is None:
        raise WeChatApiError(40003)
    msgtype = body.get("msgtype")
    allowed = OA_TYPES if app.kind is AppKind.OFFICIAL_ACCOUNT else MP_TYPES
    if msgtype not in allowed:
        raise WeChatApiError(40008)
    content = body.get(msgtype)
    if not isinstance(content, dict):
        raise WeChatApiError(47001)
    jump = check_content(app, msgtype, content)
    if app.kind is AppKind.OFFICIAL_ACCOUNT and not user.is_following(app.appid):
        raise WeChatApiError(45015)
    grant = state.kf.consume(app.appid, user.user_id)
    customservice = body.get("customservice")
    kf_account = customservice.get("kf_account") if isinstance(customservice, dict) else None
    state.deliver(
        user,
        {
            "appid": app.appid,
            "kind": "customer_service",
            "msgtype": msgtype,
            "content": content["content"] if msgtype == "text" else content,
            "data": content,
            "jump": jump or {},
            "kf_account": kf_account,
            "window": grant.scene,
            "opened_at": None,
            "opens": 0,
        },
    )
    return OK
