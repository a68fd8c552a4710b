"""Keeps the API's tables bounded: idle rate-limit buckets and expired idempotency keys."""

from __future__ import annotations

import asyncio

from services.gateway.clients import GatewayDeps
from shared.app import Runtime
from shared.observability import get_logger

log = get_logger(__name__)

INTERVAL_SECONDS = 600


async def prune_api_state(rt: Runtime) -> None:
    deps: GatewayDeps = rt.deps
    while True:
        try:
            buckets = await deps.limiter.prune()
            keys = await deps.idempotency.prune()
            if buckets or keys:
                log.info("janitor.api_pruned", rate_limit_buckets=buckets, idempotency_keys=keys)
        except Exception as exc:
            log.warning("janitor.api_failed", error=repr(exc))
        await asyncio.sleep(INTERVAL_SECONDS)
