"""identity's dependencies, built once at start; endpoints take ``Deps``, handlers ``ctx.deps``,
periodic jobs receive them as their argument."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.identity.crypto import DataVault
from services.identity.settings import IdentitySettings
from shared.app import Runtime, get_deps
from shared.db import Database
from shared.wechat.apps import AppKind, WeChatApp, WeChatApps
from shared.wechat.client import WeChatClient


@dataclass
class IdentityDeps:
    settings: IdentitySettings
    db: Database
    wechat: WeChatClient
    apps: WeChatApps
    vault: DataVault

    def app_of_kind(self, appid: str, kind: AppKind) -> WeChatApp | None:
        """The brand's app ``appid`` if it is of ``kind``."""
        app = self.apps.get(appid)
        return app if app is not None and app.kind is kind else None

    async def aclose(self) -> None:
        await self.wechat.aclose()


def make_vault(settings: IdentitySettings) -> DataVault:
    return DataVault(settings.data_key_value)


async def make_deps(rt: Runtime[IdentitySettings]) -> IdentityDeps:
    settings = rt.settings
    apps = settings.wechat_apps
    return IdentityDeps(
        settings=settings,
        db=rt.db,
        wechat=WeChatClient.create(settings.wechat_api_base, apps),
        apps=apps,
        vault=make_vault(settings),
    )


Deps = Annotated[IdentityDeps, Depends(get_deps)]
