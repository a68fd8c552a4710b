"""commerce's calls to identity (internal HTTP, outside any unit of work).

A buyer, a gift's giver or recipient becomes a member through ``POST /internal/identities``
(resolve-or-create, idempotent); a sharer is only looked up (``POST /internal/resolve``): an
affiliate is attributed to a member when identity knows them, and never creates one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx

from shared.errors import DependencyUnavailable

Source = Literal["shop_order", "gift_recipient", "gift_giver"]


@dataclass(frozen=True)
class Resolved:
    member_id: str
    created: bool


class IdentityUnavailable(DependencyUnavailable):
    """identity did not answer usefully: transient, so the consumer holds the event and tries again."""


class IdentityClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def member_for(self, appid: str, openid: str, unionid: str | None, source: Source) -> Resolved:
        body: dict[str, str] = {"appid": appid, "openid": openid, "source": source}
        if unionid:
            body["unionid"] = unionid
        try:
            r = await self.http.post("/internal/identities", json=body)
        except httpx.HTTPError as exc:
            raise IdentityUnavailable(f"identity is unreachable: {type(exc).__name__}") from exc
        if r.status_code != 200:
            # identity refusing a shop openid it should know is not this event's fault either way:
            # a 4xx here means the deployment disagrees about the apps file, a 5xx it is down.
            raise IdentityUnavailable(f"identity answered {r.status_code} to POST /internal/identities")
        answer = r.json()
        return Resolved(member_id=str(answer["member_id"]), created=bool(answer.get("created")))

    async def known_member(self, appid: str, openid: str) -> str | None:
        """The member behind (appid, openid) if identity knows them; never creates one."""
        try:
            r = await self.http.post("/internal/resolve", json={"appid": appid, "openid": openid})
        except httpx.HTTPError as exc:
            raise IdentityUnavailable(f"identity is unreachable: {type(exc).__name__}") from exc
        if r.status_code in (404, 422):
            return None
        if r.status_code != 200:
            raise IdentityUnavailable(f"identity answered {r.status_code} to POST /internal/resolve")
        member_id = r.json().get("member_id")
        return str(member_id) if member_id else None

    async def aclose(self) -> None:
        await self.http.aclose()
