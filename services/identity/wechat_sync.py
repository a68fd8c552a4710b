"""Mirror Siyu tags onto a service account's WeChat user tags, and publish conditional menus.

WeChat's limits (official docs; README.md lists them with links):

* an account has at most **100** tags (``tags/create`` → 45056), names unique (45157) and at most
  **30 bytes** (45158); ids 0/1/2 are the system's (45058);
  https://developers.weixin.qq.com/doc/offiaccount/User_Management/User_Tag_Management.html
* a user carries at most **20** tags (``batchtagging`` → 45059);
* ``batchtagging`` / ``batchuntagging`` take at most **50** openids per call (40032);
  https://developers.weixin.qq.com/doc/service/api/usermanage/tag/api_batchtagging
* conditional menus need a default menu first (65303), match on tags only since the privacy change
  (65320), are matched newest first, and cannot be edited (delete and publish again); 2,000
  ``addconditional`` calls a day;
  https://developers.weixin.qq.com/doc/offiaccount/Custom_Menus/Personalized_menu_interface.html
* a menu has 1-3 top buttons with at most 5 sub buttons each.

Only tags marked ``wechat_sync`` are mirrored, at most 20 per follower (lowest ``priority`` first).
What WeChat holds is remembered in ``wechat_user_tags``, so a run only sends the difference; a run
that fails half-way is repaired by the next one (tagging twice is harmless on WeChat's side).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.identity.models import Tag, WeChatMenu, WeChatTag
from services.identity.repository import MemberRepository
from services.identity.tagging import Tagging
from shared.errors import Unprocessable
from shared.observability import get_logger
from shared.wechat.client import WeChatClient
from shared.wechat.errors import WeChatAPIError

log = get_logger(__name__)

MAX_TAGS_PER_ACCOUNT = 100
MAX_TAGS_PER_USER = 20
MAX_OPENIDS_PER_CALL = 50
SYSTEM_TAG_IDS = frozenset({0, 1, 2})

ERR_TOO_MANY_TAGS = 45056
ERR_DUPLICATE_TAG_NAME = 45157
ERR_USER_TAG_LIMIT = 45059
ERR_NOT_FOLLOWER = 40003
ERR_NO_SUCH_CONDITIONAL = 65301


class MenuPlan(BaseModel):
    """A default menu and conditional menus by tag, published in order (the last one wins first)."""

    model_config = ConfigDict(extra="forbid")

    default: list[dict[str, Any]] = Field(min_length=1, max_length=3)
    conditional: list[ConditionalMenuPlan] = Field(default_factory=list, max_length=20)

    @classmethod
    def standard(cls, mp_appid: str | None) -> MenuPlan:
        """新人福利 for new members, 会员专享 for buyers, 积分兑换 for frequent buyers."""

        def page(name: str, path: str) -> dict[str, Any]:
            if mp_appid is None:
                return {"type": "click", "name": name, "key": f"menu:{path}"}
            # "url" is where old clients without mini-program support go.
            return {
                "type": "miniprogram",
                "name": name,
                "url": "https://mp.weixin.qq.com",
                "appid": mp_appid,
                "pagepath": path,
            }

        member = page("会员中心", "pages/member/index")
        shop = page("逛商城", "pages/shop/index")
        points = {"type": "click", "name": "查积分", "key": "points:balance"}
        return cls(
            default=[member, shop, points],
            conditional=[
                ConditionalMenuPlan(tag="new_member", button=[page("新人福利", "pages/welcome/index"), shop, points]),
                ConditionalMenuPlan(tag="buyer", button=[page("会员专享", "pages/member/benefits"), shop, points]),
                ConditionalMenuPlan(tag="frequent_buyer", button=[page("积分兑换", "pages/points/mall"), shop, points]),
            ],
        )


class ConditionalMenuPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = Field(max_length=32)
    button: list[dict[str, Any]] = Field(min_length=1, max_length=3)


MenuPlan.model_rebuild()


def chunks(items: Sequence[str], size: int = MAX_OPENIDS_PER_CALL) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class WeChatSync:
    def __init__(self, repo: MemberRepository, wechat: WeChatClient) -> None:
        self.repo = repo
        self.wechat = wechat

    # --- tags --------------------------------------------------------------------------------------

    async def ensure_wechat_tags(self, appid: str, tags: Sequence[Tag], report: dict[str, Any]) -> dict[int, int]:
        """Siyu tag id → WeChat tag id on ``appid``, creating missing WeChat tags within the 100 cap."""
        remote = (await self.wechat.call(appid, "GET", "/cgi-bin/tags/get")).get("tags", [])
        by_name = {str(t["name"]): int(t["id"]) for t in remote}
        remote_ids = set(by_name.values())
        custom = len([i for i in remote_ids if i not in SYSTEM_TAG_IDS])
        mapped: dict[int, int] = {}
        for row in await self.repo.wechat_tags(appid):
            if row.wechat_tag_id in remote_ids:
                mapped[row.tag_id] = row.wechat_tag_id
            else:  # deleted on WeChat's side (e.g. in the admin console): forget it, and what we applied
                await self.repo.forget_wechat_tag(row)
        for tag in tags:
            if tag.id in mapped:
                continue
            wechat_id = by_name.get(tag.name)
            if wechat_id is None:
                if custom >= MAX_TAGS_PER_ACCOUNT:
                    report["skipped_tag_limit"].append(tag.name)
                    continue
                try:
                    answer = await self.wechat.call(
                        appid, "POST", "/cgi-bin/tags/create", json={"tag": {"name": tag.name}}
                    )
                except WeChatAPIError as exc:
                    if exc.errcode == ERR_TOO_MANY_TAGS:
                        report["skipped_tag_limit"].append(tag.name)
                        continue
                    if exc.errcode != ERR_DUPLICATE_TAG_NAME:
                        raise
                    # Created by an earlier attempt whose answer was lost: adopt it.
                    again = (await self.wechat.call(appid, "GET", "/cgi-bin/tags/get")).get("tags", [])
                    wechat_id = next(int(t["id"]) for t in again if str(t["name"]) == tag.name)
                else:
                    wechat_id = int(answer["tag"]["id"])
                    custom += 1
                    report["tags_created"].append(tag.name)
            self.repo.add_wechat_tag(WeChatTag(appid=appid, tag_id=tag.id, wechat_tag_id=wechat_id, name=tag.name))
            mapped[tag.id] = wechat_id
        await self.repo.flush()
        return mapped

    async def sync_tags(self, appid: str) -> dict[str, Any]:
        report: dict[str, Any] = {
            "appid": appid,
            "tags_created": [],
            "skipped_tag_limit": [],
            "tagged": 0,
            "untagged": 0,
            "skipped_user_limit": 0,
            "calls": 0,
        }
        await Tagging(self.repo).ensure_rule_tags()
        synced = [t for t in await self.repo.all_tags() if t.wechat_sync]  # ordered by priority
        mapped = await self.ensure_wechat_tags(appid, synced, report)
        priority = {t.id: (t.priority, t.name) for t in synced}

        desired: dict[int, set[str]] = defaultdict(set)
        followers: set[str] = set()
        per_user: dict[str, list[int]] = defaultdict(list)
        for openid, tag_id in await self.repo.followers_with_tags(appid, list(mapped)):
            followers.add(openid)
            if tag_id is not None:
                per_user[openid].append(tag_id)
        for openid, tag_ids in per_user.items():
            for tag_id in sorted(tag_ids, key=priority.__getitem__)[:MAX_TAGS_PER_USER]:
                desired[mapped[tag_id]].add(openid)

        applied: dict[int, set[str]] = defaultdict(set)
        for openid, wechat_tag_id in await self.repo.applied_user_tags(appid):
            applied[wechat_tag_id].add(openid)

        for wechat_tag_id in sorted(set(mapped.values()) | set(applied)):
            want, have = desired.get(wechat_tag_id, set()), applied.get(wechat_tag_id, set())
            gone = sorted(o for o in have - want if o not in followers)
            # An unfollowed user cannot be untagged through the API (40003); just forget it.
            await self.repo.mark_user_tags(appid, wechat_tag_id, gone, applied=False)
            untag = sorted((have - want) - set(gone))
            tag = sorted(want - have)
            report["untagged"] += await self._apply(appid, wechat_tag_id, untag, tagging=False, report=report)
            report["tagged"] += await self._apply(appid, wechat_tag_id, tag, tagging=True, report=report)
        log.info("identity.wechat_tags_synced", **{k: v for k, v in report.items() if not isinstance(v, list)})
        return report

    async def _apply(
        self, appid: str, wechat_tag_id: int, openids: Sequence[str], *, tagging: bool, report: dict[str, Any]
    ) -> int:
        path = "/cgi-bin/tags/members/batchtagging" if tagging else "/cgi-bin/tags/members/batchuntagging"
        done = 0
        for batch in chunks(openids):
            try:
                report["calls"] += 1
                await self.wechat.call(
                    appid, "POST", path, json={"openid_list": batch, "tagid": wechat_tag_id}, idempotent=True
                )
            except WeChatAPIError as exc:
                if exc.errcode not in (ERR_USER_TAG_LIMIT, ERR_NOT_FOLLOWER) or len(batch) == 1:
                    if exc.errcode == ERR_USER_TAG_LIMIT:
                        report["skipped_user_limit"] += 1  # the user holds 20 tags set elsewhere
                        continue
                    if exc.errcode == ERR_NOT_FOLLOWER:
                        continue  # unfollowed since we read the follower list
                    raise
                # WeChat refuses a whole batch for one user: find them by trying one at a time.
                done += await self._apply_singly(appid, wechat_tag_id, batch, tagging=tagging, report=report)
                continue
            await self.repo.mark_user_tags(appid, wechat_tag_id, batch, applied=tagging)
            done += len(batch)
        return done

    async def _apply_singly(
        self, appid: str, wechat_tag_id: int, batch: list[str], *, tagging: bool, report: dict[str, Any]
    ) -> int:
        done = 0
        for openid in batch:
            done += await self._apply(appid, wechat_tag_id, [openid], tagging=tagging, report=report)
        return done

    # --- menus -------------------------------------------------------------------------------------

    async def publish_menus(self, appid: str, plan: MenuPlan) -> dict[str, Any]:
        """Publish the default menu, then one conditional menu per tag in plan order.

        Conditional menus cannot be edited: the ones published before are deleted first. WeChat
        matches the newest first, so the plan lists the most specific audience last.
        """
        tag_names = [c.tag for c in plan.conditional]
        await Tagging(self.repo).ensure_rule_tags()
        tags = {t.name: t for t in await self.repo.tags_named(tag_names)}
        missing = sorted(set(tag_names) - set(tags))
        if missing:
            raise Unprocessable(f"no such tag: {', '.join(missing)}")
        report: dict[str, Any] = {"tags_created": [], "skipped_tag_limit": []}
        mapped = await self.ensure_wechat_tags(appid, [tags[n] for n in dict.fromkeys(tag_names)], report)
        unmapped = sorted(n for n in tag_names if tags[n].id not in mapped)
        if unmapped:
            raise Unprocessable(f"WeChat has no room for the tags {', '.join(unmapped)} (100 per account)")

        for old in await self.repo.menus(appid):
            if old.menuid:
                try:
                    await self.wechat.call(appid, "POST", "/cgi-bin/menu/delconditional", json={"menuid": old.menuid})
                except WeChatAPIError as exc:
                    if exc.errcode != ERR_NO_SUCH_CONDITIONAL:
                        raise
        await self.repo.clear_menus(appid)
        await self.wechat.call(appid, "POST", "/cgi-bin/menu/create", json={"button": plan.default})
        self.repo.add_menu(WeChatMenu(appid=appid, body={"button": plan.default}))
        published = []
        for menu in plan.conditional:
            wechat_tag_id = mapped[tags[menu.tag].id]
            answer = await self.wechat.call(
                appid,
                "POST",
                "/cgi-bin/menu/addconditional",
                json={"button": menu.button, "matchrule": {"tag_id": str(wechat_tag_id)}},
            )
            menuid = str(answer.get("menuid"))
            self.repo.add_menu(
                WeChatMenu(
                    appid=appid,
                    tag_name=menu.tag,
                    wechat_tag_id=wechat_tag_id,
                    menuid=menuid,
                    body={"button": menu.button},
                )
            )
            published.append({"tag": menu.tag, "wechat_tag_id": wechat_tag_id, "menuid": menuid})
        await self.repo.flush()
        log.info("identity.menus_published", appid=appid, conditional=len(published))
        return {"appid": appid, "default": True, "conditional": published, "tags_created": report["tags_created"]}
