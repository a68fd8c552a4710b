"""Sending deliveries: WeChat is called after the decision committed, never inside a transaction.

A handler decides and records a ``pending`` delivery in its unit of work (its insert wakes the
sender at commit). The sender claims due deliveries in one statement (``sending``: the guard
against a second send), calls WeChat with nothing held open, and records the result in another
statement. A sender that dies mid-call leaves its delivery ``sending``: the sweeper marks it
``unknown`` after ``NOTIFY_DELIVERY_STUCK_SECONDS`` and it is never sent again — a courtesy reply
sent twice is worse than one lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter

from services.notify.deliveries.repository import WAKE_CHANNEL, ClaimedDelivery, DeliveryRepository, sweep_stuck
from shared.db import Database
from shared.observability import get_logger
from shared.periodic import run_every
from shared.wechat.client import WeChatClient
from shared.wechat.errors import WeChatAPIError, WeChatUnavailable

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

log = get_logger(__name__)

SENT = Counter("siyu_notify_deliveries_total", "Deliveries by outcome", ["channel", "status"])

CLAIM_BATCH = 20
MAX_ATTEMPTS = 5
POLL_SECONDS = 5.0  # due retries, and a missed wake-up, are picked up this often
SWEEP_INTERVAL_SECONDS = 60


def _backoff(attempts: int) -> float:
    return float(min(300, 5 * 2 ** (attempts - 1)))


class DeliverySender:
    def __init__(self, db: Database, wechat: WeChatClient) -> None:
        self.db = db
        self.wechat = wechat

    async def send_due(self) -> int:
        """Claim the due deliveries and send them; how many were claimed."""
        async with self.db.connection() as conn:
            claimed = await DeliveryRepository(conn).claim(CLAIM_BATCH)
        for delivery in claimed:
            await self.send(delivery)
        return len(claimed)

    async def send(self, delivery: ClaimedDelivery) -> None:
        status, errcode, errmsg, retry_in = "sent", None, None, None
        try:
            await self.wechat.send_custom_message(delivery.appid, delivery.body)
        except WeChatAPIError as exc:
            errcode, errmsg = exc.errcode, exc.errmsg
            if exc.retryable and delivery.attempts < MAX_ATTEMPTS:
                # WeChat said it did nothing (-1, over a quota): try again later.
                retry_in = _backoff(delivery.attempts)
            else:
                # Outside the 48-hour window (45015), over its count (45047), not a follower (43004): final.
                status = "failed" if exc.retryable else "rejected"
        except WeChatUnavailable as exc:
            # A timeout or a 5xx after the request left: it may have been delivered.
            status, errmsg = "unknown", exc.detail
        except Exception as exc:
            status, errmsg = "unknown", repr(exc)[:500]
            log.exception("delivery.crashed", delivery_id=delivery.id)
        async with self.db.connection() as conn:
            repository = DeliveryRepository(conn)
            if retry_in is not None:
                await repository.retry_later(delivery.id, retry_in, errcode, errmsg)
            else:
                await repository.finish(delivery.id, status, errcode, errmsg)
        SENT.labels(delivery.channel, "retry" if retry_in is not None else status).inc()
        log.info("delivery.sent" if status == "sent" else "delivery.not_sent", delivery_id=delivery.id, status=status)


async def delivery_sender(deps: NotifyDeps) -> None:
    """Send deliveries as their decisions commit (LISTEN), and whatever is due every few seconds."""
    sender = DeliverySender(deps.db, deps.wechat)
    wake = asyncio.Event()
    listener: asyncpg.Connection | None = None
    try:
        while True:
            wake.clear()
            try:
                if listener is None or listener.is_closed():
                    listener = await asyncpg.connect(deps.db.dsn, timeout=5)
                    await listener.add_listener(WAKE_CHANNEL, lambda *_: wake.set())
                while await sender.send_due():
                    pass
            except Exception as exc:  # the database away: try again at the next poll
                log.warning("delivery.sender_failed", error=repr(exc))
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener.close()
                    listener = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=POLL_SECONDS)
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()


async def delivery_sweeper(deps: NotifyDeps) -> None:
    async def once() -> dict[str, int]:
        return {"deliveries_unknown": await sweep_stuck(deps.db, deps.settings.delivery_stuck_seconds)}

    await run_every(SWEEP_INTERVAL_SECONDS, once, "delivery.swept")
