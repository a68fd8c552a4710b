"""commerce's periodic jobs (``background=[...]``), each run by one replica at a time.

A round takes its turn (``Database.take_turns``: another replica's round skips instead of doing the
same work); WeChat is called with no transaction open, and each order, member or gift is applied in
a short unit of work of its own. Every step is idempotent, so a round cut short is simply done again
by the next one. Times come from ``deps.clock`` (tests move it across boundaries).

* :func:`reconcile_orders_once` — the order mirror's safety net: walks ``order/list/get`` by update
  time from a stored cursor (minus an overlap) and applies every order it lists, so a lost push
  converges within ``COMMERCE_RECONCILE_INTERVAL_SECONDS``.
* :func:`housekeeping_once` — expires points lots, announces points about to expire, ends tier
  periods, expires coupons, re-fetches gifts still waiting past their 24 h, releases redemptions left
  reserved by a process that died.
"""

from __future__ import annotations

from datetime import timedelta

from services.commerce.coupons.repository import CouponRepository
from services.commerce.deps import CommerceDeps
from services.commerce.gifts.repository import GiftRepository
from services.commerce.orders.handlers import fetch_snapshot
from services.commerce.orders.repository import OrderRepository
from services.commerce.orders.service import OrderService
from services.commerce.points.repository import PointsRepository
from services.commerce.points.service import PointsService
from services.commerce.rewards.service import RewardService
from services.commerce.tiers.service import TierService
from shared.bus.consumer import PoisonMessage
from shared.observability import get_logger
from shared.periodic import run_every
from shared.wechat.apps import AppKind
from shared.wechat.errors import WeChatAPIError

log = get_logger(__name__)

RECONCILE_JOB = "commerce.reconcile_orders"
HOUSEKEEPING_JOB = "commerce.housekeeping"
MAX_WINDOW = 7 * 86_400 - 1  # order/list/get: update_time_range at most 7 days
PAGE = 100
BATCH = 500
GIFT_GRACE = timedelta(minutes=10)


async def apply_order(deps: CommerceDeps, appid: str, order_id: str, source: str) -> bool:
    """Re-fetch one order and apply it; False when the shop does not have it."""
    try:
        snapshot = await fetch_snapshot(deps, appid, order_id)
    except PoisonMessage as exc:
        log.warning("order.unfetchable", order_id=order_id, reason=str(exc))
        return False
    async with deps.db.unit_of_work() as uow:
        await OrderService(uow, deps.settings, deps.clock()).apply(snapshot, source=source)
    return True


async def reconcile_orders_once(deps: CommerceDeps) -> dict[str, int]:
    counts = {"orders_reconciled": 0}
    async with deps.db.take_turns(RECONCILE_JOB) as mine:
        if not mine:
            return counts
        for app in deps.settings.wechat_apps.of_kind(AppKind.SHOP):
            counts["orders_reconciled"] += await _reconcile_shop(deps, app.appid)
    return counts


async def _reconcile_shop(deps: CommerceDeps, appid: str) -> int:
    name = f"orders:{appid}"
    now = int(deps.clock().timestamp())
    async with deps.db.connection() as conn:
        cursor = await OrderRepository(conn).cursor(name)
    start = (cursor if cursor is not None else now - deps.settings.reconcile_first_window_seconds) - (
        deps.settings.reconcile_overlap_seconds
    )
    done = 0
    while start < now:
        end = min(now, start + MAX_WINDOW)
        next_key: str | None = None
        while True:
            page = await deps.wechat.shop_order_list(
                appid, update_from=start, update_to=end, page_size=PAGE, next_key=next_key
            )
            for order_id in page.order_id_list:
                done += await apply_order(deps, appid, order_id, "reconcile")
            if not page.has_more or not page.next_key:
                break
            next_key = page.next_key
        async with deps.db.connection() as conn:
            await OrderRepository(conn).set_cursor(name, end)
        start = end + 1
    return done


async def housekeeping_once(deps: CommerceDeps) -> dict[str, int]:
    counts = {"points_expired": 0, "expiring_notices": 0, "tiers_lowered": 0, "coupons_expired": 0}
    counts |= {"gifts_rechecked": 0, "redemptions_released": 0}
    async with deps.db.take_turns(HOUSEKEEPING_JOB) as mine:
        if not mine:
            return counts
        settings, now = deps.settings, deps.clock()
        async with deps.db.connection() as conn:
            members = await PointsRepository(conn).members_with_expired_lots(now, BATCH)
        for member_id in members:
            async with deps.db.unit_of_work() as uow:
                counts["points_expired"] += await PointsService(uow, settings, now).expire_member(member_id)
        async with deps.db.unit_of_work() as uow:
            counts["expiring_notices"] = await PointsService(uow, settings, now).announce_expiring(BATCH)
        async with deps.db.unit_of_work() as uow:
            counts["tiers_lowered"] = await TierService(uow, settings, now).end_periods(BATCH)
        async with deps.db.connection() as conn:
            counts["coupons_expired"] = await CouponRepository(conn).expire_due(now, BATCH)
            overdue = await GiftRepository(conn).overdue(now - GIFT_GRACE, BATCH)
        for gift in overdue:
            try:
                counts["gifts_rechecked"] += await apply_order(deps, gift["shop_appid"], gift["order_id"], "gift-check")
            except WeChatAPIError as exc:
                log.warning("gift.recheck_failed", present_order_id=gift["present_order_id"], error=repr(exc))
        async with deps.db.connection() as conn:
            stale = await RewardService.stale_of(conn, settings, now)
        for redemption_id in stale:
            async with deps.db.unit_of_work() as uow:
                released = await RewardService(uow, settings, now).release(redemption_id, "stale: never fulfilled")
            counts["redemptions_released"] += released
    return counts


async def reconcile_orders(deps: CommerceDeps) -> None:
    if deps.settings.reconcile_interval_seconds > 0:
        await run_every(
            deps.settings.reconcile_interval_seconds, lambda: reconcile_orders_once(deps), "commerce.reconcile"
        )


async def housekeeping(deps: CommerceDeps) -> None:
    if deps.settings.housekeeping_interval_seconds > 0:
        await run_every(
            deps.settings.housekeeping_interval_seconds, lambda: housekeeping_once(deps), "commerce.housekeeping"
        )


__all__ = ["housekeeping", "housekeeping_once", "reconcile_orders", "reconcile_orders_once"]
