"""Gifting (送礼物): one gift per present_order_id, the state machine of research/shop.md §2.5."""
