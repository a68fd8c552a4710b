"""``POST /internal/members/{id}/phone``: bind the number behind a ``getPhoneNumber`` code."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from services.identity.deps import Deps
from services.identity.logins.service import wechat_failure
from services.identity.phones.schemas import PhoneRequest, PhoneResponse
from services.identity.phones.service import PhoneNumber, PhoneService
from shared.app import InternalOnly
from shared.errors import UnknownApp, UpstreamError
from shared.wechat.apps import AppKind
from shared.wechat.errors import WeChatAPIError, WeChatUnavailable

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["phones"])


@router.post("/members/{member_id}/phone", response_model=PhoneResponse)
async def bind_phone(member_id: uuid.UUID, body: PhoneRequest, deps: Deps) -> PhoneResponse:
    """409 ``phone-taken`` when another member holds the number (never a silent merge); 401
    ``invalid-code`` for a bad or used code; 503 when WeChat is busy."""
    if deps.app_of_kind(body.appid, AppKind.MINI_PROGRAM) is None:
        raise UnknownApp(f"{body.appid} is not a mini-program of this brand")
    # WeChat first: no connection is held while it answers.
    try:
        info = await deps.wechat.get_phone_number(body.appid, body.code)
    except (WeChatAPIError, WeChatUnavailable) as exc:
        raise wechat_failure(exc) from None
    if info.watermark is not None and info.watermark.appid != body.appid:
        raise UpstreamError("WeChat returned a phone number issued to another app")
    try:
        number = PhoneNumber.parse(info.country_code, info.pure_phone_number)
    except ValueError as exc:
        raise UpstreamError(f"WeChat returned an unusable phone number: {exc}") from None
    async with deps.db.unit_of_work() as uow:
        await PhoneService(uow).bind(member_id, appid=body.appid, number=number)
    return PhoneResponse(phone_masked=number.masked, country_code=number.country_code, bound=True)
