"""Every WeChat push becomes ``wechat.<kind>.<name>`` with this one ``data`` shape."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from shared.events.envelope import EventData


class WeChatPushReceived(EventData):
    """A push from WeChat, verified, decrypted, de-duplicated and stored by the gateway.

    ``event_type`` is per instance (``wechat.oa.subscribe``, ``wechat.shop.channels_ec_order_pay``);
    ``payload`` is the whole decoded push with every value as WeChat sent it (64-bit ids exact).
    """

    event_type: ClassVar[str] = "wechat.*.*"

    appid: str
    app_kind: str = Field(pattern="^(oa|mp|shop)$")
    name: str
    openid: str | None = None
    create_time: int
    msg_id: str | None = None
    dedup_key: str
    push_id: int = Field(description="the gateway's inbound log id, for inspection")
    payload: dict[str, Any]
