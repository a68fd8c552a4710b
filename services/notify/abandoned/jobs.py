"""Remind once about an order left unpaid, with a coupon from commerce when it offers one.

The coupon is asked for before the unit of work opens (commerce's call is idempotent per order);
if commerce cannot give one the reminder goes without it and the row records why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from services.notify.abandoned.repository import AbandonedRepository
from services.notify.rules.service import Rendered, render
from services.notify.sends.service import SendService
from shared.observability import get_logger
from shared.periodic import run_every

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

log = get_logger(__name__)
LEASE_SECONDS = 60.0


async def ask_coupon(commerce: httpx.AsyncClient, member_id: str, order_id: str) -> dict[str, Any]:
    try:
        r = await commerce.post(
            f"/internal/members/{member_id}/coupons",
            json={"kind": "abandoned_order", "order_id": order_id},
            headers={"Idempotency-Key": f"abandoned-order-{order_id}"},
        )
    except httpx.HTTPError as exc:
        return {"error": f"commerce unreachable ({type(exc).__name__})"}
    if r.status_code not in (200, 201):
        return {"error": f"commerce answered {r.status_code}"}
    body = r.json()
    return body if isinstance(body, dict) else {"error": "commerce answered no object"}


async def remind_once(deps: NotifyDeps) -> dict[str, int]:
    async with deps.db.connection() as conn:
        due = await AbandonedRepository(conn).claim(deps.clock(), 50, LEASE_SECONDS)
    reminded = 0
    rule = deps.rules.abandoned_order
    for order in due:
        coupon = await ask_coupon(deps.commerce, order["member_id"], order["order_id"])
        values = {
            **order,
            "coupon_title": coupon.get("title") or "",
            "occurred_at": deps.clock(),
            "event_id": order["order_id"],
        }
        rendered = render(rule, values)
        keyed = Rendered(
            rendered.data, rendered.page, rendered.text, f"{rule.name}:{order['order_id']}:{order['member_id']}"
        )
        async with deps.db.unit_of_work() as uow:
            if await AbandonedRepository(uow.conn).remind(order["order_id"], coupon):
                await SendService(uow, deps.library, deps.quiet).decide(rule, keyed, order["member_id"], deps.clock())
                reminded += 1
        if "error" in coupon:
            log.warning("abandoned.no_coupon", order_id=order["order_id"], error=coupon["error"])
    return {"reminded": reminded}


async def abandoned_forever(deps: NotifyDeps) -> None:
    await run_every(deps.settings.jobs_poll_seconds, lambda: remind_once(deps), "abandoned.reminders")
