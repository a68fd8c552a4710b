"""Mirror Siyu tags onto a service account's WeChat user tags, and publish conditional menus.

WeChat's limits (official docs; README.md lists them with links):

* an account has at most **100** tags (``tags/create`` → 45056), names unique (45157) and at most
  **30 bytes** (45158); ids 0/1/2 are the system's (45058);
* a user carries at most **20** tags (``batchtagging`` → 45059);
* ``batchtagging`` / ``batchuntagging`` take at most **50** openids per call (40032);
* conditional menus need a default menu first (65303), match on tags only (65320), are matched
  newest first and cannot be edited (delete and publish again).

WeChat is never called inside a transaction. Tag sync goes through the followers in chunks of
WeChat's page size (10,000, openid order): each chunk is diffed in SQL and its decision — the
(un)tagging attempts and the cursor — committed in one statement; then WeChat is called for each
attempt and each outcome recorded in one more. A run that dies half-way leaves its cursor and its
pending attempts: the next run sends those first (tagging twice is harmless on WeChat's side) and
goes on from the cursor. Runs take turns through a lease (``wechat_sync_jobs``), not a lock held
across WeChat calls.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from services.identity.deps import IdentityDeps
from services.identity.tags.repository import TagRepository
from services.identity.wechat_sync.repository import WeChatSyncRepository
from services.identity.wechat_sync.schemas import MenuPlan
from shared.errors import Conflict, Unprocessable
from shared.observability import get_logger
from shared.wechat.errors import WeChatAPIError

log = get_logger(__name__)

MAX_TAGS_PER_ACCOUNT = 100
MAX_TAGS_PER_USER = 20
MAX_OPENIDS_PER_CALL = 50
FOLLOWER_PAGE = 10_000  # WeChat's own page size (user/get, user/tag/get)
SYSTEM_TAG_IDS = frozenset({0, 1, 2})
LEASE_SECONDS = 300.0

ERR_TOO_MANY_TAGS = 45056
ERR_DUPLICATE_TAG_NAME = 45157
ERR_USER_TAG_LIMIT = 45059
ERR_NOT_FOLLOWER = 40003
ERR_NO_SUCH_CONDITIONAL = 65301

TAG_SYNC = "tag_sync"
MENUS = "menus"


class SyncBusy(Conflict):
    """Another run of the same job holds its lease."""


def new_report(appid: str) -> dict[str, Any]:
    return {
        "appid": appid,
        "tags_created": [],
        "skipped_tag_limit": [],
        "tagged": 0,
        "untagged": 0,
        "skipped_user_limit": 0,
        "calls": 0,
        "followers": 0,
        "chunks": 0,
        "forgotten": 0,
        "resumed": False,
    }


class WeChatMirror:
    """Both jobs for one service account. Holds no connection across a WeChat call."""

    def __init__(self, deps: IdentityDeps, *, follower_page: int = FOLLOWER_PAGE) -> None:
        self.deps = deps
        self.db = deps.db
        self.wechat = deps.wechat
        self.follower_page = follower_page

    @asynccontextmanager
    async def _repo(self) -> AsyncIterator[WeChatSyncRepository]:
        """A pooled connection for one statement (autocommit), released before WeChat is called."""
        async with self.db.connection() as conn:
            yield WeChatSyncRepository(conn)

    # --- WeChat tags for Siyu tags -----------------------------------------------------------------

    async def _remote_tags(self, appid: str) -> dict[str, int]:
        tags = (await self.wechat.call(appid, "GET", "/cgi-bin/tags/get")).get("tags", [])
        return {str(t["name"]): int(t["id"]) for t in tags}

    async def ensure_wechat_tags(
        self, appid: str, tags: Sequence[tuple[int, str]], report: dict[str, Any]
    ) -> dict[int, int]:
        """Siyu tag id → WeChat tag id on ``appid``, creating missing WeChat tags within the 100 cap.

        Creation is guarded by WeChat itself: a name is unique there (45157), so a tag whose
        creation answer was lost is adopted by name the next time.
        """
        remote = await self._remote_tags(appid)
        remote_ids = set(remote.values())
        async with self._repo() as repo:
            mapped = await repo.mappings(appid)
        gone = sorted({w for w in mapped.values() if w not in remote_ids})
        async with self._repo() as repo:
            await repo.forget_wechat_tags(appid, gone)
        mapped = {t: w for t, w in mapped.items() if w in remote_ids}
        custom = len([i for i in remote_ids if i not in SYSTEM_TAG_IDS])
        for tag_id, name in tags:
            if tag_id in mapped:
                continue
            wechat_id = remote.get(name)
            if wechat_id is None:
                if custom >= MAX_TAGS_PER_ACCOUNT:
                    report["skipped_tag_limit"].append(name)
                    continue
                try:
                    answer = await self.wechat.call(appid, "POST", "/cgi-bin/tags/create", json={"tag": {"name": name}})
                except WeChatAPIError as exc:
                    if exc.errcode == ERR_TOO_MANY_TAGS:
                        report["skipped_tag_limit"].append(name)
                        continue
                    if exc.errcode != ERR_DUPLICATE_TAG_NAME:
                        raise
                    wechat_id = (await self._remote_tags(appid))[name]
                else:
                    wechat_id = int(answer["tag"]["id"])
                    custom += 1
                    report["tags_created"].append(name)
            async with self._repo() as repo:
                await repo.map_tag(appid, tag_id, wechat_id, name)
            mapped[tag_id] = wechat_id
        return dict(mapped)

    # --- tag sync ----------------------------------------------------------------------------------

    async def sync_tags(self, appid: str) -> dict[str, Any]:
        """Mirror synced tags onto ``appid``'s followers. Raises :class:`SyncBusy` while another run
        holds the lease; resumes a run that died half-way."""
        owner = uuid.uuid4()
        async with self._repo() as repo:
            claimed = await repo.claim(appid, TAG_SYNC, owner, LEASE_SECONDS)
        if claimed is None:
            raise SyncBusy("a WeChat tag sync for this account is already running; try again when it has finished")
        run_id, cursor, _ = claimed
        report = new_report(appid)
        report["resumed"] = cursor is not None
        finished = False
        try:
            async with self.db.connection() as conn:
                await TagRepository(conn).ensure_rule_tags()
                synced = [(r["id"], r["name"]) for r in await WeChatSyncRepository(conn).synced_tags()]
            await self.ensure_wechat_tags(appid, synced, report)
            await self._send_pending(appid, report)  # what a run that died left decided but unsent
            while True:
                async with self.db.connection() as conn:
                    chunk = await WeChatSyncRepository(conn).decide_chunk(
                        appid,
                        run_id=run_id,
                        owner=owner,
                        cursor=cursor,
                        limit=self.follower_page,
                        max_tags_per_user=MAX_TAGS_PER_USER,
                        batch=MAX_OPENIDS_PER_CALL,
                        lease_seconds=LEASE_SECONDS,
                    )
                if not chunk["held"]:
                    raise SyncBusy("the tag sync lease was taken over (this run took longer than its lease)")
                report["chunks"] += 1
                report["followers"] += chunk["followers"]
                report["forgotten"] += chunk["forgotten"]
                await self._send_pending(appid, report)
                cursor = chunk["upto"]
                if cursor is None:
                    finished = True
                    break
        finally:
            async with self._repo() as repo:
                await repo.release(appid, TAG_SYNC, owner, report=report, finished=finished)
        log.info("identity.wechat_tags_synced", **{k: v for k, v in report.items() if not isinstance(v, list)})
        return report

    async def _send_pending(self, appid: str, report: dict[str, Any]) -> None:
        async with self._repo() as repo:
            attempts = await repo.pending(appid)
        for attempt in attempts:
            tagging = attempt["op"] == "tag"
            applied, outcome = await self._apply(
                appid, attempt["wechat_tag_id"], list(attempt["openids"]), tagging, report
            )
            async with self._repo() as repo:
                await repo.finish(attempt["id"], applied, outcome)
            report["tagged" if tagging else "untagged"] += len(applied)

    async def _apply(
        self, appid: str, wechat_tag_id: int, openids: list[str], tagging: bool, report: dict[str, Any]
    ) -> tuple[list[str], dict[str, Any]]:
        """Send one batch; (the openids WeChat now holds as decided, what happened)."""
        path = "/cgi-bin/tags/members/batchtagging" if tagging else "/cgi-bin/tags/members/batchuntagging"
        report["calls"] += 1
        try:
            await self.wechat.call(
                appid, "POST", path, json={"openid_list": openids, "tagid": wechat_tag_id}, idempotent=True
            )
        except WeChatAPIError as exc:
            if exc.errcode not in (ERR_USER_TAG_LIMIT, ERR_NOT_FOLLOWER):
                raise  # the attempt stays pending: the next run sends it again
            if len(openids) > 1:
                # WeChat refuses a whole batch for one user: find them by trying one at a time.
                applied: list[str] = []
                for openid in openids:
                    one, _ = await self._apply(appid, wechat_tag_id, [openid], tagging, report)
                    applied += one
                return applied, {"singly": True}
            if exc.errcode == ERR_USER_TAG_LIMIT:
                report["skipped_user_limit"] += 1  # the user holds 20 tags set elsewhere
            return [], {"errcode": exc.errcode}  # 40003: unfollowed since the chunk was read
        return openids, {"ok": True}

    # --- menus ---------------------------------------------------------------------------------------

    async def publish_menus(self, appid: str, plan: MenuPlan) -> dict[str, Any]:
        """Publish the default menu, then one conditional menu per tag in plan order.

        Conditional menus cannot be edited: the ones published before are deleted first. WeChat
        matches the newest first, so the plan lists the most specific audience last. Each WeChat
        call's result is recorded right after it, so what ``wechat_menus`` says stays what WeChat has
        even when a run stops half-way; runs take turns through the ``menus`` lease.
        """
        owner = uuid.uuid4()
        async with self._repo() as repo:
            claimed = await repo.claim(appid, MENUS, owner, LEASE_SECONDS)
        if claimed is None:
            raise SyncBusy("menus for this account are being published; try again when that has finished")
        report: dict[str, Any] = {"tags_created": [], "skipped_tag_limit": []}
        published: list[dict[str, Any]] = []
        try:
            tag_names = [c.tag for c in plan.conditional]
            async with self.db.connection() as conn:
                await TagRepository(conn).ensure_rule_tags()
                tags = {r["name"]: r["id"] for r in await WeChatSyncRepository(conn).tags_named(tag_names)}
            missing = sorted(set(tag_names) - set(tags))
            if missing:
                raise Unprocessable(f"no such tag: {', '.join(missing)}")
            wanted = [(tags[n], n) for n in dict.fromkeys(tag_names)]
            mapped = await self.ensure_wechat_tags(appid, wanted, report)
            unmapped = sorted(n for n in tag_names if tags[n] not in mapped)
            if unmapped:
                raise Unprocessable(f"WeChat has no room for the tags {', '.join(unmapped)} (100 per account)")

            async with self._repo() as repo:
                old_menus = await repo.menus(appid)
            for old in old_menus:
                if old["menuid"]:
                    try:
                        await self.wechat.call(
                            appid, "POST", "/cgi-bin/menu/delconditional", json={"menuid": old["menuid"]}
                        )
                    except WeChatAPIError as exc:
                        if exc.errcode != ERR_NO_SUCH_CONDITIONAL:
                            raise
                async with self._repo() as repo:
                    await repo.drop_menu(old["id"])
            await self.wechat.call(appid, "POST", "/cgi-bin/menu/create", json={"button": plan.default})
            async with self._repo() as repo:
                await repo.add_menu(
                    appid, tag_name=None, wechat_tag_id=None, menuid=None, body={"button": plan.default}
                )
            for menu in plan.conditional:
                wechat_tag_id = mapped[tags[menu.tag]]
                answer = await self.wechat.call(
                    appid,
                    "POST",
                    "/cgi-bin/menu/addconditional",
                    json={"button": menu.button, "matchrule": {"tag_id": str(wechat_tag_id)}},
                )
                menuid = str(answer.get("menuid"))
                async with self._repo() as repo:
                    await repo.add_menu(
                        appid,
                        tag_name=menu.tag,
                        wechat_tag_id=wechat_tag_id,
                        menuid=menuid,
                        body={"button": menu.button},
                    )
                published.append({"tag": menu.tag, "wechat_tag_id": wechat_tag_id, "menuid": menuid})
        finally:
            async with self._repo() as repo:
                await repo.release(appid, MENUS, owner, report=report, finished=True)
        log.info("identity.menus_published", appid=appid, conditional=len(published))
        return {"appid": appid, "default": True, "conditional": published, "tags_created": report["tags_created"]}
