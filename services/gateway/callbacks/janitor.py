"""Keeps the inbound log and the replay store bounded, well past every WeChat retry horizon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.gateway.models import InboundPush, PushNonce
from services.gateway.settings import GatewaySettings
from shared.app import Runtime
from shared.db import delete_in_batches
from shared.periodic import run_every

INTERVAL_SECONDS = 600


async def prune_once(rt: Runtime, now: datetime | None = None) -> dict[str, int]:
    settings = rt.settings
    assert isinstance(settings, GatewaySettings)
    now = now or datetime.now(UTC)
    # A nonce only matters inside its timestamp window; keep twice the longest one.
    window = 2 * max(settings.push_window_seconds, settings.shop_push_window_seconds)
    nonces = await delete_in_batches(
        rt.sessions, PushNonce.__tablename__, "seen_at < :cutoff", {"cutoff": now - timedelta(seconds=window)}
    )
    pushes = await delete_in_batches(
        rt.sessions,
        InboundPush.__tablename__,
        "received_at < :cutoff",
        {"cutoff": now - timedelta(hours=settings.push_retention_hours)},
    )
    return {"nonces": nonces, "pushes": pushes}


async def prune_inbound_log(rt: Runtime) -> None:
    await run_every(INTERVAL_SECONDS, lambda: prune_once(rt), "janitor.pruned")
