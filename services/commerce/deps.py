"""commerce's dependencies, built once at start; endpoints take ``Deps``, handlers ``ctx.deps``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends

from services.commerce.identity_client import IdentityClient
from services.commerce.settings import CommerceSettings
from shared.app import Runtime, get_deps
from shared.db import Database
from shared.http import create_client
from shared.wechat.client import WeChatClient

if TYPE_CHECKING:
    from services.commerce.rewards.schemas import Fulfilment


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CommerceDeps:
    settings: CommerceSettings
    db: Database
    wechat: WeChatClient
    identity: IdentityClient
    # Every rule that depends on time reads this clock (tests move it across expiry boundaries).
    clock: Callable[[], datetime] = utcnow
    # How a reward is fulfilled after its points and stock are reserved (tests make it fail).
    fulfil: Callable[[Fulfilment], Awaitable[None]] | None = field(default=None)

    async def aclose(self) -> None:
        await self.wechat.aclose()
        await self.identity.aclose()


async def make_deps(rt: Runtime[CommerceSettings]) -> CommerceDeps:
    settings = rt.settings
    return CommerceDeps(
        settings=settings,
        db=rt.db,
        wechat=WeChatClient.create(settings.wechat_api_base, settings.wechat_apps),
        identity=IdentityClient(
            create_client(settings.identity_url, timeout=5.0, internal_token=settings.internal_token_value)
        ),
    )


Deps = Annotated[CommerceDeps, Depends(get_deps)]
