"""Keeps the API's tables bounded: idle rate-limit buckets and expired idempotency keys."""

from __future__ import annotations

from services.gateway.clients import GatewayDeps
from shared.app import Runtime
from shared.periodic import run_every

INTERVAL_SECONDS = 600


async def prune_api_state(rt: Runtime) -> None:
    deps: GatewayDeps = rt.deps

    async def once() -> dict[str, int]:
        return {"rate_limit_buckets": await deps.limiter.prune(), "idempotency_keys": await deps.idempotency.prune()}

    await run_every(INTERVAL_SECONDS, once, "janitor.api_pruned")
