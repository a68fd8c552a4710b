"""The operator's handles on the WeChat mirror: a tag sync now, and menu publishing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.identity.deps import Deps, IdentityDeps
from services.identity.wechat_sync.schemas import MenuPlan, MenuRequest, TagSyncRequest
from services.identity.wechat_sync.service import WeChatMirror
from shared.app import InternalOnly
from shared.errors import UnknownApp
from shared.wechat.apps import AppKind

router = APIRouter(prefix="/internal/wechat", dependencies=[InternalOnly], tags=["wechat"])


def official_account(deps: IdentityDeps, appid: str) -> None:
    if deps.app_of_kind(appid, AppKind.OFFICIAL_ACCOUNT) is None:
        raise UnknownApp(f"{appid} is not a service account of this brand")


@router.post("/tag-sync")
async def sync_wechat_tags(body: TagSyncRequest, deps: Deps) -> dict[str, Any]:
    """Mirror synced tags onto the service account's WeChat user tags (within WeChat's limits); the
    report. 409 while another sync of the account runs (the schedule's, or another operator's)."""
    official_account(deps, body.appid)
    return await WeChatMirror(deps).sync_tags(body.appid)


@router.post("/menus")
async def publish_menus(body: MenuRequest, deps: Deps) -> dict[str, Any]:
    """Publish the default menu and one conditional menu per tag (新人福利 / 会员专享 / 积分兑换 by default)."""
    official_account(deps, body.appid)
    mp = deps.apps.of_kind(AppKind.MINI_PROGRAM)
    plan = body.plan or MenuPlan.standard(mp[0].appid if mp else None)
    return await WeChatMirror(deps).publish_menus(body.appid, plan)
