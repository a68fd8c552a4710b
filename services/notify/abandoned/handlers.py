"""Watch created orders; a payment or cancellation stops the reminder."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from services.notify.abandoned.repository import AbandonedRepository
from shared.bus.consumer import EventContext
from shared.events.commerce import OrderCancelled, OrderCreated, OrderPaid

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps


async def watch_order(event: OrderCreated, ctx: EventContext[NotifyDeps]) -> None:
    if not event.member_id:
        return
    due = ctx.envelope.occurred_at + timedelta(minutes=ctx.deps.settings.abandoned_order_minutes)
    await AbandonedRepository(ctx.uow.conn).watch(event.order_id, event.member_id, event.title, event.paid_fen, due)


async def order_paid(event: OrderPaid, ctx: EventContext[NotifyDeps]) -> None:
    await AbandonedRepository(ctx.uow.conn).close(event.order_id, event.member_id or "", "paid")


async def order_cancelled(event: OrderCancelled, ctx: EventContext[NotifyDeps]) -> None:
    await AbandonedRepository(ctx.uow.conn).close(event.order_id, event.member_id or "", "cancelled")
