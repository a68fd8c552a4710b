"""Points for the gateway (``/api/v1/me`` and ``/api/v1/me/points/ledger``), for notify's "积分" reply
(``GET /internal/members/by-openid/{appid}/{openid}/points``: the push names an openid, identity names
its member) and the operator's campaigns."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, status
from fastapi.responses import JSONResponse

from services.commerce.deps import Deps
from services.commerce.points.repository import PointsRepository
from services.commerce.points.schemas import Ledger, NewCampaign, PointsSummary
from services.commerce.settings import CommerceSettings
from services.commerce.tiers.repository import TierRepository
from shared.app import InternalOnly
from shared.errors import Conflict, MemberNotFound, Unprocessable
from shared.wechat.apps import APPID_PATTERN, OPENID_PATTERN

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])

# Internal kinds → what the member sees (contracts.md: earn, redeem, expire, reverse, adjust, checkin).
_KIND = {"release": "redeem", "merge_in": "adjust", "merge_out": "adjust"}
_LOT_STATE = {"closed": "reversed"}
_STATE = {
    "redeem": "spent",
    "release": "released",
    "expire": "expired",
    "reverse": "reversed",
    "adjust": "available",
    "merge_in": "merged",
    "merge_out": "merged",
}


def ledger_entry(row: asyncpg.Record) -> dict[str, Any]:
    kind = row["kind"]
    if row["lot_state"] is not None and kind in ("earn", "checkin", "adjust"):
        state = _LOT_STATE.get(row["lot_state"], row["lot_state"])
    else:
        state = _STATE.get(kind, "available")
    entry: dict[str, Any] = {
        "entry_id": str(row["entry_id"]),
        "kind": _KIND.get(kind, kind),
        "points": int(row["points"]),
        "state": state,
        "created_at": row["created_at"].isoformat(),
    }
    if row["order_id"]:
        entry["order_id"] = row["order_id"]
    return entry


async def points_summary(
    conn: asyncpg.Connection, settings: CommerceSettings, member_id: str, now: Any
) -> dict[str, Any]:
    until = now + timedelta(days=settings.points_notice_days)
    row = await PointsRepository(conn).summary(member_id, now, until)
    tier = await TierRepository(conn).tier_of(member_id) or settings.tiers[0].name
    return {
        "tier": tier,
        "points": {"available": int(row["available"]), "pending": int(row["pending"]), "expiring": row["expiring"]},
    }


@router.get("/members/{member_id}/points", response_model=PointsSummary)
async def get_points(member_id: uuid.UUID, deps: Deps) -> JSONResponse:
    """``{"tier", "points": {"available", "pending", "expiring": [{"points", "expires_at"}]}}`` — what
    ``/api/v1/me`` adds, and the real balance the "积分" reply answers with."""
    async with deps.db.connection() as conn:
        body = await points_summary(conn, deps.settings, str(member_id), deps.clock())
    return JSONResponse(body)


@router.get("/members/by-openid/{appid}/{openid}/points")
async def points_by_openid(
    appid: Annotated[str, Path(pattern=APPID_PATTERN)], openid: Annotated[str, Path(pattern=OPENID_PATTERN)], deps: Deps
) -> JSONResponse:
    """``{"member_id", "tier", "available", "pending"}`` of the member behind a push's openid; 404
    ``member-not-found`` when identity knows no such member (nothing is created); 503 when identity
    does not answer (notify then defers the reply)."""
    member_id = await deps.identity.known_member(appid, openid)
    if member_id is None:
        raise MemberNotFound(f"no member has openid {openid} of {appid}")
    async with deps.db.connection() as conn:
        body = await points_summary(conn, deps.settings, member_id, deps.clock())
    points = body["points"]
    return JSONResponse(
        {"member_id": member_id, "tier": body["tier"], "available": points["available"], "pending": points["pending"]}
    )


@router.get("/members/{member_id}/points/ledger", response_model=Ledger)
async def get_ledger(
    member_id: uuid.UUID,
    deps: Deps,
    cursor: Annotated[str | None, Query(max_length=19, pattern=r"^[0-9]{1,19}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    """Newest first; ``next_cursor`` is null on the last page."""
    before = int(cursor) if cursor else None
    if before is not None and before > 2**63 - 1:
        raise Unprocessable("cursor out of range")
    async with deps.db.connection() as conn:
        rows = await PointsRepository(conn).ledger(str(member_id), before, limit + 1)
    page = rows[:limit]
    next_cursor = str(page[-1]["entry_id"]) if len(rows) > limit else None
    return JSONResponse({"entries": [ledger_entry(r) for r in page], "next_cursor": next_cursor})


@router.post("/admin/points-campaigns", status_code=status.HTTP_201_CREATED, response_model=NewCampaign)
async def create_campaign(body: NewCampaign, deps: Deps) -> NewCampaign:
    if body.ends_at <= body.starts_at:
        raise Unprocessable("ends_at must be after starts_at")
    async with deps.db.connection() as conn:
        fresh = await PointsRepository(conn).create_campaign(
            body.campaign_id, body.name, body.bonus_pct, body.starts_at, body.ends_at
        )
    if not fresh:
        raise Conflict(f"campaign {body.campaign_id} exists")
    return body
