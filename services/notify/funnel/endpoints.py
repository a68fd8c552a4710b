"""Opens (the mini-program reports the page a message opened) and the funnel per rule and campaign."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter

from services.notify.deps import Deps
from services.notify.funnel.schemas import FunnelRow, OpenAnswer, OpenReport
from services.notify.sends.repository import SendRepository
from shared.app import InternalOnly

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])


def send_id_of(page: str) -> int | None:
    """The ``siyu_send`` a message put in its jump target, if the page carries exactly one."""
    values = parse_qs(urlsplit(page).query).get("siyu_send", [])
    if len(values) != 1 or not values[0].isdigit() or len(values[0]) > 18:
        return None
    return int(values[0])


@router.post("/opens")
async def record_open(body: OpenReport, deps: Deps) -> OpenAnswer:
    """Attribute an open to the send whose jump it was; a page without attribution is simply not attributed."""
    send_id = send_id_of(body.page)
    if send_id is None:
        return OpenAnswer(attributed=False)
    async with deps.db.connection() as conn:
        row = await SendRepository(conn).opened(send_id, body.member_id, deps.clock())
    if row is None:
        return OpenAnswer(attributed=False)
    campaign = row["campaign_id"]
    return OpenAnswer(
        attributed=True, send_id=str(row["id"]), rule=row["rule"], campaign_id=str(campaign) if campaign else None
    )


@router.get("/funnel")
async def funnel(deps: Deps) -> list[FunnelRow]:
    async with deps.db.connection() as conn:
        rows = await SendRepository(conn).funnel()
    return [
        FunnelRow(
            **{**r, "rule": r["rule"] or None, "campaign_id": str(r["campaign_id"]) if r["campaign_id"] else None}
        )
        for r in rows
    ]
