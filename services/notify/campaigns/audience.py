"""A campaign's audience, page by page: a member list as given, a tag or segment from identity.

Identity's ``GET /internal/members?tag=|segment=&after=&limit=`` is called outside any unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from shared.errors import DependencyUnavailable

PAGE = 500


@dataclass(frozen=True)
class AudiencePage:
    member_ids: list[str]
    next_cursor: str | None  # None: this was the last page


async def audience_page(identity: httpx.AsyncClient, audience: dict[str, Any], cursor: str | None) -> AudiencePage:
    ids = audience.get("member_ids")
    if ids is not None:
        start = int(cursor or 0)
        end = start + PAGE
        return AudiencePage(list(ids[start:end]), str(end) if end < len(ids) else None)
    params: dict[str, Any] = {"limit": PAGE}
    if audience.get("tag"):
        params["tag"] = audience["tag"]
    else:
        params["segment"] = audience["segment"]
    if cursor:
        params["after"] = cursor
    try:
        r = await identity.get("/internal/members", params=params)
    except httpx.HTTPError as exc:
        raise DependencyUnavailable(f"identity is not reachable for the audience ({type(exc).__name__})") from exc
    if r.status_code != 200:
        raise DependencyUnavailable(f"identity answered {r.status_code} for the audience")
    body = r.json()
    members = [str(m["member_id"]) for m in body.get("members", [])]
    return AudiencePage(members, body.get("next_after"))
