"""An order by a member who opened a message within the window is that message's conversion."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.notify.sends.repository import SendRepository
from shared.bus.consumer import EventContext
from shared.events.commerce import OrderPaid

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps


async def attribute_order(event: OrderPaid, ctx: EventContext[NotifyDeps]) -> None:
    if not event.member_id:
        return
    window = ctx.deps.settings.funnel_order_window_hours * 3600
    await SendRepository(ctx.uow.conn).ordered(event.member_id, event.order_id, event.paid_at, window)
