"""Keeps the inbound log and the replay store bounded, well past every WeChat retry horizon."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from services.gateway.models import InboundPush, PushNonce
from services.gateway.settings import GatewaySettings
from shared.app import Runtime
from shared.db import transaction
from shared.observability import get_logger

log = get_logger(__name__)

INTERVAL_SECONDS = 600


async def prune_once(rt: Runtime, now: datetime | None = None) -> tuple[int, int]:
    settings = rt.settings
    assert isinstance(settings, GatewaySettings)
    now = now or datetime.now(UTC)
    # A nonce only matters inside its timestamp window; keep twice the longest one.
    nonce_cutoff = now - timedelta(seconds=2 * max(settings.push_window_seconds, settings.shop_push_window_seconds))
    push_cutoff = now - timedelta(hours=settings.push_retention_hours)
    async with transaction(rt.sessions) as session:
        nonces = (await session.execute(delete(PushNonce).where(PushNonce.seen_at < nonce_cutoff))).rowcount
        pushes = (await session.execute(delete(InboundPush).where(InboundPush.received_at < push_cutoff))).rowcount
    return int(nonces or 0), int(pushes or 0)


async def prune_inbound_log(rt: Runtime) -> None:
    while True:
        try:
            nonces, pushes = await prune_once(rt)
            if nonces or pushes:
                log.info("janitor.pruned", nonces=nonces, pushes=pushes)
        except Exception as exc:
            log.warning("janitor.failed", error=repr(exc))
        await asyncio.sleep(INTERVAL_SECONDS)
