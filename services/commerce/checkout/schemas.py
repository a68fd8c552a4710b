"""What the gateway sends for a shop checkout callback, and what WeChat expects back (shop.md §3.2)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

OK: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}


class ShopCallback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    appid: str = Field(max_length=32)
    openid: str = Field(max_length=64)
    payload: dict[str, Any]


class DiscountRequest(BaseModel):
    """The part of ``order_info`` a discount decision reads."""

    unique_id: str = Field(min_length=1, max_length=128)
    order_session_id: str | None = Field(default=None, max_length=128)
    shop_appid: str | None = Field(default=None, max_length=32)
    price_info: dict[str, Any] = Field(default_factory=dict)


class CallbackAnswer(BaseModel):
    errcode: int = 0
    errmsg: str = "ok"
    result: int | None = None
