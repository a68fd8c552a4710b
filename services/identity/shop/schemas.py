"""The shop membership callbacks as the gateway forwards them, and WeChat's answers (shop.md §3.2)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.identity.members.schemas import APPID, OPENID, Body


class ShopCallback(Body):
    appid: str = Field(pattern=APPID)
    openid: str = Field(pattern=OPENID)
    payload: dict[str, Any]


class VipInfo(BaseModel):
    is_vip: bool
    identity: str | None = None
    outer_userid: str | None = None


class VipInfoAnswer(BaseModel):
    errcode: int = 0
    errmsg: str = "ok"
    info: VipInfo


class Ack(BaseModel):
    errcode: int = 0
    errmsg: str = "ok"
