"""What an official account keeps besides followers: user tags and custom menus.

Rules and limits come from the official docs (sources per rule below and in README.md):
- tags: ``doc/service/api/usermanage/tag/*`` and the older ``offiaccount/User_Management/User_Tag_Management``
  page — at most 100 tags per account, names unique and at most 30 bytes, at most 20 tags per user,
  at most 50 openids per batch call, tags 0/1/2 reserved by the system;
- menus: ``doc/service/api/custommenu/*`` — 1-3 top buttons, at most 5 sub buttons each, names at most
  16 bytes (top) / 60 bytes (sub), keys at most 128 bytes, urls at most 1024 bytes; conditional menus
  need a default menu (65303) and a non-empty matchrule (65304), may only match on tags since the
  privacy change (65320), and are matched newest first, falling back to the default menu.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tools.wechat_sandbox.errors import WeChatApiError

if TYPE_CHECKING:
    from tools.wechat_sandbox.state import SandboxIds

MAX_TAGS_PER_ACCOUNT = 100
MAX_TAGS_PER_USER = 20
MAX_TAG_NAME_BYTES = 30
MAX_OPENIDS_PER_BATCH = 50
FIRST_TAG_ID = 100  # ids the platform hands out; 0 (未分组), 1 (黑名单), 2 (星标组) are reserved
SYSTEM_TAGS = {2: "星标组"}  # the system tag the docs' tags/get example lists
RESERVED_TAG_IDS = {0, 1, 2}
TAG_FANS_PAGE = 10_000

BUTTON_TYPES = {
    "click",
    "view",
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
    "media_id",
    "article_id",
    "article_view_limited",
    "view_limited",
    "miniprogram",
}
# addconditional: "创建时，只要匹配条件中包含隐私信息的，将被拒绝，并返回错误码 65320".
PRIVACY_MATCH_FIELDS = ("sex", "country", "province", "city", "language", "client_platform_type")


@dataclass
class ConditionalMenu:
    menuid: int
    button: list[dict[str, Any]]
    matchrule: dict[str, Any]

    @property
    def tag_id(self) -> int | None:
        raw = self.matchrule.get("tag_id", self.matchrule.get("group_id"))
        try:
            return int(raw) if raw not in (None, "") else None
        except (TypeError, ValueError):
            return None


@dataclass
class OfficialAccountBook:
    appid: str
    ids: SandboxIds
    tags: dict[int, str] = field(default_factory=dict)
    # user_id -> tag ids in the order they were added; tag id -> user_ids in tagging order
    user_tags: dict[str, list[int]] = field(default_factory=dict)
    fans: dict[int, list[str]] = field(default_factory=dict)
    next_tag_id: int = FIRST_TAG_ID
    default_menu: list[dict[str, Any]] | None = None
    default_menuid: int | None = None
    conditional: list[ConditionalMenu] = field(default_factory=list)

    # -- tags -----------------------------------------------------------------------------------

    def all_tags(self) -> dict[int, str]:
        return SYSTEM_TAGS | self.tags

    def _check_name(self, name: Any, *, except_id: int | None = None) -> str:
        if not isinstance(name, str) or not name.strip():
            raise WeChatApiError(45157)
        if len(name.encode()) > MAX_TAG_NAME_BYTES:
            raise WeChatApiError(45158)
        if any(n == name and i != except_id for i, n in self.all_tags().items()):
            raise WeChatApiError(45157)  # "标签名非法，请注意不能和其他标签重名"
        return name

    def create_tag(self, name: Any) -> tuple[int, str]:
        name = self._check_name(name)
        if len(self.tags) >= MAX_TAGS_PER_ACCOUNT:
            raise WeChatApiError(45056)
        tag_id = self.next_tag_id
        self.next_tag_id += 1
        self.tags[tag_id] = name
        return tag_id, name

    def _custom_tag(self, tag_id: Any) -> int:
        tid = _as_int(tag_id)
        if tid in RESERVED_TAG_IDS:
            raise WeChatApiError(45058)
        if tid is None or tid not in self.tags:
            raise WeChatApiError(45159)
        return tid

    def update_tag(self, tag_id: Any, name: Any) -> None:
        tid = self._custom_tag(tag_id)
        self.tags[tid] = self._check_name(name, except_id=tid)

    def delete_tag(self, tag_id: Any) -> None:
        tid = self._custom_tag(tag_id)
        del self.tags[tid]
        for user_id in self.fans.pop(tid, []):
            self.user_tags[user_id].remove(tid)

    def taggable(self, tag_id: Any) -> int:
        tid = _as_int(tag_id)
        if tid is None or tid not in self.all_tags():
            raise WeChatApiError(45159)
        return tid

    def tag_users(self, tag_id: int, user_ids: list[str]) -> None:
        """Tag every user or none: 45059 when one of them would carry more than 20 tags."""
        for user_id in user_ids:
            current = self.user_tags.get(user_id, [])
            if tag_id not in current and len(current) >= MAX_TAGS_PER_USER:
                raise WeChatApiError(45059)
        for user_id in dict.fromkeys(user_ids):
            current = self.user_tags.setdefault(user_id, [])
            if tag_id not in current:
                current.append(tag_id)
                self.fans.setdefault(tag_id, []).append(user_id)

    def untag_users(self, tag_id: int, user_ids: list[str]) -> None:
        for user_id in dict.fromkeys(user_ids):
            current = self.user_tags.get(user_id, [])
            if tag_id in current:
                current.remove(tag_id)
                self.fans[tag_id].remove(user_id)

    def tags_of(self, user_id: str) -> list[int]:
        return list(self.user_tags.get(user_id, []))

    def forget_user(self, user_id: str) -> None:
        for tid in self.user_tags.pop(user_id, []):
            self.fans[tid].remove(user_id)

    def describe_tags(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": n, "count": len(self.fans.get(i, []))} for i, n in sorted(self.all_tags().items())]

    # -- menus ----------------------------------------------------------------------------------

    def create_menu(self, button: Any) -> None:
        self.default_menu = validate_buttons(button)
        self.default_menuid = self.ids.menu_id()

    def delete_menus(self) -> None:
        self.default_menu, self.default_menuid = None, None
        self.conditional.clear()

    def add_conditional(self, button: Any, matchrule: Any) -> int:
        if self.default_menu is None:
            raise WeChatApiError(65303)
        if not isinstance(matchrule, dict) or not any(v not in (None, "") for v in matchrule.values()):
            raise WeChatApiError(65304)
        if any(matchrule.get(k) not in (None, "") for k in PRIVACY_MATCH_FIELDS):
            raise WeChatApiError(65320)
        buttons = validate_buttons(button)
        taken = {self.default_menuid, *(m.menuid for m in self.conditional)}
        menuid = self.ids.menu_id()
        while menuid in taken:  # pragma: no cover
            menuid = self.ids.menu_id()
        self.conditional.append(ConditionalMenu(menuid, buttons, dict(matchrule)))
        return menuid

    def delete_conditional(self, menuid: Any) -> None:
        mid = _as_int(menuid)
        for menu in self.conditional:
            if menu.menuid == mid:
                self.conditional.remove(menu)
                return
        raise WeChatApiError(65301)

    def menu_for(self, user_id: str) -> tuple[list[dict[str, Any]], ConditionalMenu | None] | None:
        """(buttons, the conditional menu chosen or None) the user sees, or None without any menu.

        "将按照发布顺序，由新到旧逐一匹配，直到用户信息与 matchrule 相符合。如果全部个性化菜单都没有
        匹配成功，则返回默认菜单。"
        """
        if self.default_menu is None:
            return None
        tags = set(self.user_tags.get(user_id, []))
        for menu in reversed(self.conditional):
            if menu.tag_id is not None and menu.tag_id in tags:
                return menu.button, menu
        return self.default_menu, None

    def describe_menus(self) -> dict[str, Any]:
        """``/cgi-bin/menu/get``: the default menu, plus ``menuid``s and ``conditionalmenu`` when any exist."""
        if self.default_menu is None:
            raise WeChatApiError(46003)
        out: dict[str, Any] = {"menu": {"button": with_sub_buttons(self.default_menu)}}
        if self.conditional:
            out["menu"]["menuid"] = self.default_menuid
            out["conditionalmenu"] = [
                {"button": with_sub_buttons(m.button), "matchrule": m.matchrule, "menuid": m.menuid}
                for m in self.conditional
            ]
        return out


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _bytes(value: Any) -> int:
    return len(value.encode()) if isinstance(value, str) else 0


def validate_buttons(button: Any) -> list[dict[str, Any]]:
    """A light check of a menu's ``button`` array with WeChat's error codes; returns it unchanged."""
    if not isinstance(button, list) or not 1 <= len(button) <= 3:
        raise WeChatApiError(40016)
    for top in button:
        if not isinstance(top, dict):
            raise WeChatApiError(40017)
        name = top.get("name")
        if not isinstance(name, str) or not 0 < _bytes(name) <= 16:
            raise WeChatApiError(40018)
        subs = top.get("sub_button")
        if subs:  # a parent button: its own type is ignored, its children are checked
            if not isinstance(subs, list) or len(subs) > 5:
                raise WeChatApiError(40023)
            for sub in subs:
                if not isinstance(sub, dict):
                    raise WeChatApiError(40024)
                if not 0 < _bytes(sub.get("name")) <= 60:
                    raise WeChatApiError(40025)
                _check_action(sub, type_err=40024, key_err=40026, url_err=40027)
        else:
            _check_action(top, type_err=40017, key_err=40019, url_err=40020)
    return button


def _check_action(b: dict[str, Any], *, type_err: int, key_err: int, url_err: int) -> None:
    kind = b.get("type")
    if kind not in BUTTON_TYPES:
        raise WeChatApiError(type_err)
    if kind in ("view", "miniprogram") and not 0 < _bytes(b.get("url")) <= 1024:
        raise WeChatApiError(url_err)
    if kind not in ("view", "miniprogram", "media_id", "view_limited", "article_id", "article_view_limited") and (
        not 0 < _bytes(b.get("key")) <= 128
    ):
        raise WeChatApiError(key_err)


def with_sub_buttons(buttons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Buttons as menu/get shows them: every button and sub button carries a ``sub_button`` array."""
    out = []
    for b in buttons:
        subs = b.get("sub_button") or []
        item = {k: v for k, v in b.items() if k != "sub_button"}
        item["sub_button"] = [{**{k: v for k, v in s.items() if k != "sub_button"}, "sub_button": []} for s in subs]
        out.append(item)
    return out


def selfmenu_info(buttons: list[dict[str, Any]] | None) -> dict[str, Any]:
    """``/cgi-bin/get_current_selfmenu_info`` for a menu set through the API.

    That endpoint nests sub buttons as ``{"sub_button": {"list": [...]}}`` (official getCurrentSelfMenuInfo).
    """
    if buttons is None:
        return {"is_menu_open": 0}
    out = []
    for b in buttons:
        subs = b.get("sub_button") or []
        if subs:
            out.append({"name": b["name"], "sub_button": {"list": [dict(s) for s in subs]}})
        else:
            out.append(dict(b))
    return {"is_menu_open": 1, "selfmenu_info": {"button": out}}
