"""commerce's dependencies, built once at start; endpoints take ``Deps``, handlers ``ctx.deps``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.commerce.settings import CommerceSettings
from shared.app import Runtime, get_deps
from shared.db import Database


@dataclass
class CommerceDeps:
    settings: CommerceSettings
    db: Database

    async def aclose(self) -> None:
        pass


async def make_deps(rt: Runtime[CommerceSettings]) -> CommerceDeps:
    return CommerceDeps(settings=rt.settings, db=rt.db)


Deps = Annotated[CommerceDeps, Depends(get_deps)]
