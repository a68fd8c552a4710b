"""A mini-program login: the ``wx.login`` code in, the member out (never the session_key)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.identity.members.schemas import APPID, WX_CODE, Body


class LoginRequest(Body):
    appid: str = Field(pattern=APPID)
    code: str = Field(pattern=WX_CODE)


class LoginResponse(BaseModel):
    member_id: str
    openid: str
    unionid_known: bool
    created: bool
