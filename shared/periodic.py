"""The one loop for a service's periodic housekeeping (pruning, scheduled syncs)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from shared.observability import get_logger

log = get_logger(__name__)


async def run_every(
    interval: float, job: Callable[[], Awaitable[Mapping[str, int]]], event: str, *, wait_first: bool = False
) -> None:
    """Run ``job`` every ``interval`` seconds until cancelled; log its counts when any is non-zero.

    A failing round is logged and the next one tries again: housekeeping must never take the
    service down.
    """
    if wait_first:
        await asyncio.sleep(interval)
    while True:
        try:
            counts = await job()
            if any(counts.values()):
                log.info(event, **counts)
        except Exception as exc:
            log.warning(f"{event}_failed", error=repr(exc))
        await asyncio.sleep(interval)
