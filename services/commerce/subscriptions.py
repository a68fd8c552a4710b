"""commerce's subscription manifest: every event type it consumes and its handler."""

from __future__ import annotations

from services.commerce.coupons.handlers import on_coupon_unused, on_coupon_used
from services.commerce.members.handlers import on_member_merged, on_member_registered
from services.commerce.orders.handlers import on_order_event
from shared.bus.consumer import Handler

# Every push that says an order or an after-sale changed: each re-fetches the order.
ORDER_PUSHES = (
    "channels_ec_order_new",
    "channels_ec_order_pay",
    "channels_ec_order_cancel",
    "channels_ec_order_wait_shipping",
    "channels_ec_order_deliver",
    "channels_ec_order_confirm",
    "channels_ec_order_settle",
    "channels_ec_order_ext_info_update",
    "product_order_status_update",
    "channels_ec_aftersale_update",
    "channels_ec_present_aftersale_update",
)

SUBSCRIPTIONS: dict[str, Handler] = {
    **{f"wechat.shop.{name}": on_order_event for name in ORDER_PUSHES},
    "wechat.shop.channels_ec_user_coupon_use": on_coupon_used,
    "wechat.shop.channels_ec_user_coupon_unuse": on_coupon_unused,
    "identity.member.merged": on_member_merged,
    "identity.member.registered": on_member_registered,
}
