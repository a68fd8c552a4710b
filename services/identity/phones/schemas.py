"""Phone binding: a ``getPhoneNumber`` code in, the masked number out."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.identity.members.schemas import APPID, WX_CODE, Body


class PhoneRequest(Body):
    appid: str = Field(pattern=APPID)
    code: str = Field(pattern=WX_CODE)


class PhoneResponse(BaseModel):
    phone_masked: str
    country_code: str
    bound: bool
