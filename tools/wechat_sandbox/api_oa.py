"""Official-account user tags and custom menus: ``/cgi-bin/tags/*``, ``/cgi-bin/user/tag/get``,
``/cgi-bin/menu/*`` and ``/cgi-bin/get_current_selfmenu_info``. Rules live in ``oa.py``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from shared.wechat.apps import AppKind, WeChatApp
from tools.wechat_sandbox.api import OK, StateDep, app_of_token, json_body, json_doc
from tools.wechat_sandbox.oa import MAX_OPENIDS_PER_BATCH, TAG_FANS_PAGE, selfmenu_info, with_sub_buttons
from tools.wechat_sandbox.state import SandboxState, VirtualUser, WeChatApiError

router = APIRouter(tags=["WeChat API"])

OA = AppKind.OFFICIAL_ACCOUNT


def _tag_obj(body: dict[str, Any]) -> dict[str, Any]:
    tag = body.get("tag")
    if not isinstance(tag, dict):
        raise WeChatApiError(47001)
    return tag


def _follower(state: SandboxState, app: WeChatApp, openid: Any) -> VirtualUser:
    """A follower of ``app`` by openid: 40003 unknown or not following, 49003 another app's openid."""
    if not isinstance(openid, str) or not openid:
        raise WeChatApiError(40003)
    user = state.user_by_openid(app.appid, openid)
    if user is None:
        if any(state.user_by_openid(other.appid, openid) for other in state.apps.apps):
            raise WeChatApiError(49003)
        raise WeChatApiError(40003)
    if not user.is_following(app.appid):
        raise WeChatApiError(40003)
    return user


def _followers(state: SandboxState, app: WeChatApp, body: dict[str, Any]) -> list[VirtualUser]:
    openids = body.get("openid_list")
    if not isinstance(openids, list) or not 0 < len(openids) <= MAX_OPENIDS_PER_BATCH:
        raise WeChatApiError(40032)
    return [_follower(state, app, o) for o in openids]


# -- tags -------------------------------------------------------------------------------------------


@router.post("/cgi-bin/tags/create", openapi_extra=json_doc({"tag": {"name": "广东"}}))
async def create_tag(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Create a tag → ``{"tag": {"id", "name"}}``. 45157 empty or duplicate name; 45158 name over
    30 bytes; 45056 the account already has 100 tags."""
    app = app_of_token(state, access_token, OA)
    tag = _tag_obj(await json_body(request))
    tag_id, name = state.book(app.appid).create_tag(tag.get("name"))
    return {"tag": {"id": tag_id, "name": name}}


@router.get("/cgi-bin/tags/get")
async def get_tags(state: StateDep, access_token: str | None = None) -> Any:
    """``{"tags": [{"id", "name", "count"}]}``, including the system tag 2 (星标组)."""
    app = app_of_token(state, access_token, OA)
    return {"tags": state.book(app.appid).describe_tags()}


@router.post("/cgi-bin/tags/update", openapi_extra=json_doc({"tag": {"id": 134, "name": "广东人"}}))
async def update_tag(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Rename a tag. 45058 system tag (0/1/2); 45159 unknown id; 45157/45158 as for create."""
    app = app_of_token(state, access_token, OA)
    tag = _tag_obj(await json_body(request))
    state.book(app.appid).update_tag(tag.get("id"), tag.get("name"))
    return OK


@router.post("/cgi-bin/tags/delete", openapi_extra=json_doc({"tag": {"id": 134}}))
async def delete_tag(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Delete a tag and untag its users. 45058 system tag; 45159 unknown id."""
    app = app_of_token(state, access_token, OA)
    tag = _tag_obj(await json_body(request))
    state.book(app.appid).delete_tag(tag.get("id"))
    return OK


_BATCH_EXAMPLE = {"openid_list": ["ocYxcuAEy30bX0NXmGn4ypqx3tI0", "ocYxcuBt0mRugKZ7tGAHPnUaOW7Y"], "tagid": 134}


@router.post("/cgi-bin/tags/members/batchtagging", openapi_extra=json_doc(_BATCH_EXAMPLE))
async def batch_tagging(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Tag 1-50 followers (all or none). 40032 empty list or over 50; 45159 unknown tag; 40003 an
    openid that is not a follower; 49003 another app's openid; 45059 a user would pass 20 tags."""
    app = app_of_token(state, access_token, OA)
    body = await json_body(request)
    book = state.book(app.appid)
    users = _followers(state, app, body)
    book.tag_users(book.taggable(body.get("tagid")), [u.user_id for u in users])
    return OK


@router.post("/cgi-bin/tags/members/batchuntagging", openapi_extra=json_doc(_BATCH_EXAMPLE))
async def batch_untagging(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Untag 1-50 followers. Errors as for batchtagging, minus 45059."""
    app = app_of_token(state, access_token, OA)
    body = await json_body(request)
    book = state.book(app.appid)
    users = _followers(state, app, body)
    book.untag_users(book.taggable(body.get("tagid")), [u.user_id for u in users])
    return OK


@router.post("/cgi-bin/tags/getidlist", openapi_extra=json_doc({"openid": "ocYxcuBt0mRugKZ7tGAHPnUaOW7Y"}))
async def get_tag_id_list(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"tagid_list": [...]}`` of one follower, in tagging order. 40003 / 49003 as for batchtagging."""
    app = app_of_token(state, access_token, OA)
    user = _follower(state, app, (await json_body(request)).get("openid"))
    return {"tagid_list": state.book(app.appid).tags_of(user.user_id)}


@router.post("/cgi-bin/user/tag/get", openapi_extra=json_doc({"tagid": 134, "next_openid": ""}))
async def get_tag_fans(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """A tag's followers, 10,000 a page in tagging order: ``{"count", "data": {"openid": [...]},
    "next_openid"}``; pass the answer's ``next_openid`` to continue; an exhausted list answers
    ``{"count": 0, "next_openid": ""}``. 45159 unknown tag."""
    app = app_of_token(state, access_token, OA)
    body = await json_body(request)
    book = state.book(app.appid)
    tag_id = book.taggable(body.get("tagid"))
    openids = [state.users[uid].openids[app.appid] for uid in book.fans.get(tag_id, [])]
    start = 0
    next_openid = body.get("next_openid")
    if next_openid:
        if next_openid not in openids:
            raise WeChatApiError(40003)
        start = openids.index(next_openid) + 1
    page = openids[start : start + TAG_FANS_PAGE]
    if not page:
        return {"count": 0, "next_openid": ""}
    return {"count": len(page), "data": {"openid": page}, "next_openid": page[-1]}


# -- menus ------------------------------------------------------------------------------------------

_MENU_EXAMPLE = {
    "button": [
        {"type": "click", "name": "今日歌曲", "key": "V1001_TODAY_MUSIC"},
        {"name": "菜单", "sub_button": [{"type": "view", "name": "搜索", "url": "http://www.soso.com/"}]},
    ]
}


@router.post("/cgi-bin/menu/create", openapi_extra=json_doc(_MENU_EXAMPLE))
async def create_menu(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Set the default menu. 40016 not 1-3 top buttons; 40023 over 5 sub buttons; 40017/40024 unknown
    type; 40018/40025 name empty or over 16/60 bytes; 40019/40026 key missing or over 128 bytes;
    40020/40027 url missing or over 1024 bytes. Conditional menus are kept."""
    app = app_of_token(state, access_token, OA)
    state.book(app.appid).create_menu((await json_body(request)).get("button"))
    return OK


@router.get("/cgi-bin/menu/delete")
async def delete_menu(state: StateDep, access_token: str | None = None) -> Any:
    """Delete the default menu and every conditional menu."""
    app = app_of_token(state, access_token, OA)
    state.book(app.appid).delete_menus()
    return OK


@router.post(
    "/cgi-bin/menu/addconditional",
    openapi_extra=json_doc(_MENU_EXAMPLE | {"matchrule": {"tag_id": "2"}}),
)
async def add_conditional_menu(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Add a conditional menu → ``{"menuid": "<digits>"}``. 65303 no default menu yet; 65304 empty
    matchrule; 65320 a matchrule on sex/region/language/platform (privacy); button errors as create."""
    app = app_of_token(state, access_token, OA)
    body = await json_body(request)
    menuid = state.book(app.appid).add_conditional(body.get("button"), body.get("matchrule"))
    return {"menuid": str(menuid)}


@router.post("/cgi-bin/menu/delconditional", openapi_extra=json_doc({"menuid": "208379533"}))
async def delete_conditional_menu(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """Delete one conditional menu. 65301 no conditional menu with that menuid."""
    app = app_of_token(state, access_token, OA)
    state.book(app.appid).delete_conditional((await json_body(request)).get("menuid"))
    return OK


@router.get("/cgi-bin/menu/get")
async def get_menu(state: StateDep, access_token: str | None = None) -> Any:
    """``{"menu": {"button"}}``, plus ``menu.menuid`` and ``conditionalmenu`` once conditional menus
    exist. 46003 when the account has no menu."""
    app = app_of_token(state, access_token, OA)
    return state.book(app.appid).describe_menus()


@router.get("/cgi-bin/get_current_selfmenu_info")
async def get_current_selfmenu_info(state: StateDep, access_token: str | None = None) -> Any:
    """``{"is_menu_open", "selfmenu_info": {"button"}}`` of the default menu (sub buttons nested as
    ``{"sub_button": {"list": [...]}}``, as this endpoint does)."""
    app = app_of_token(state, access_token, OA)
    return selfmenu_info(state.book(app.appid).default_menu)


@router.post("/cgi-bin/menu/trymatch", openapi_extra=json_doc({"user_id": "OPENID"}))
async def try_match_menu(request: Request, state: StateDep, access_token: str | None = None) -> Any:
    """``{"button": [...]}`` the user sees: the newest conditional menu whose ``tag_id`` the user
    carries, else the default menu. 65302 unknown ``user_id`` (openid; WeChat ids are not
    simulated); 46003 no menu."""
    app = app_of_token(state, access_token, OA)
    user_id = (await json_body(request)).get("user_id")
    user = state.user_by_openid(app.appid, user_id) if isinstance(user_id, str) else None
    if user is None:
        raise WeChatApiError(65302)
    seen = state.book(app.appid).menu_for(user.user_id)
    if seen is None:
        raise WeChatApiError(46003)
    return {"button": with_sub_buttons(seen[0])}
