"""Logins: WeChat first (``jscode2session``, no connection held while it answers), then the member.

The session_key is sealed (crypto.py) and stored on the identity by the same statement that
resolves a returning member; it is never returned.
"""

from __future__ import annotations

from services.identity.crypto import session_key_binding
from services.identity.deps import IdentityDeps
from services.identity.logins.schemas import LoginResponse
from services.identity.members.service import resolve_or_create, utcnow
from shared.errors import InvalidWeChatCode, LoginBlocked, SiyuError, WeChatBusy
from shared.wechat.apps import AppKind
from shared.wechat.errors import (
    CodeBlocked,
    CodeUsed,
    InvalidAccessToken,
    InvalidCode,
    MinuteQuotaExceeded,
    SystemBusy,
    WeChatAPIError,
    WeChatUnavailable,
)


def wechat_failure(exc: WeChatAPIError | WeChatUnavailable) -> SiyuError:
    """What a WeChat failure during a code exchange (login or phone) means for identity's caller."""
    if isinstance(exc, InvalidCode | CodeUsed):
        return InvalidWeChatCode("the code is invalid, expired or already used; get a new one", errcode=exc.errcode)
    if isinstance(exc, CodeBlocked):
        return LoginBlocked("WeChat intercepted this login (high-risk user)", errcode=exc.errcode)
    if isinstance(exc, MinuteQuotaExceeded):
        return WeChatBusy("WeChat's per-minute quota is reached", headers={"Retry-After": "60"}, errcode=exc.errcode)
    if isinstance(exc, SystemBusy | InvalidAccessToken | WeChatUnavailable):
        extra = {"errcode": exc.errcode} if isinstance(exc, WeChatAPIError) else {}
        return WeChatBusy("WeChat did not answer; retry shortly", headers={"Retry-After": "2"}, **extra)
    return exc


class LoginService:
    def __init__(self, deps: IdentityDeps) -> None:
        self.deps = deps

    async def login(self, appid: str, code: str) -> LoginResponse:
        try:
            answer = await self.deps.wechat.jscode2session(appid, code)
        except (WeChatAPIError, WeChatUnavailable) as exc:
            raise wechat_failure(exc) from None
        sealed = self.deps.vault.seal(answer.session_key, bound_to=session_key_binding(appid, answer.openid))
        found = await resolve_or_create(
            self.deps.db,
            appid=appid,
            app_kind=AppKind.MINI_PROGRAM.value,
            openid=answer.openid,
            unionid=answer.unionid,
            source="mp_login",
            session_key_enc=sealed,
            activity=True,
            at=utcnow(),
        )
        return LoginResponse(
            member_id=str(found.member_id),
            openid=answer.openid,
            unionid_known=found.unionid_known,
            created=found.created,
        )
