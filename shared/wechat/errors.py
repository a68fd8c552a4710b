"""Typed errors for WeChat API answers.

WeChat answers almost every failure with HTTP 200 and ``{"errcode": N, "errmsg": "…"}``; the
errcode is the only reliable signal (errmsg wording changes and carries a per-request ``rid``).
Each errcode Siyu meets has its own class so callers branch on types, and ``retryable`` tells a
consumer or outbox whether trying *later* can succeed. Retrying *now*, inside one call, is the
client's business (see ``shared.wechat.client``), not the caller's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.errors import ServiceUnavailable, UpstreamError

TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
"""The access token we sent was rejected (invalid, not the latest, expired)."""

TOKEN_ENDPOINTS = ("/cgi-bin/stable_token", "/cgi-bin/token")

_REGISTRY: dict[int, type[WeChatAPIError]] = {}


class WeChatAPIError(UpstreamError):
    """WeChat answered with a non-zero errcode."""

    type_slug = "wechat-error"
    title = "WeChat API error"
    retryable: ClassVar[bool] = False
    errcodes: ClassVar[tuple[int, ...]] = ()

    errcode: int
    errmsg: str
    path: str

    def __init_subclass__(cls, *, errcodes: tuple[int, ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.errcodes = errcodes
        for code in errcodes:
            if code in _REGISTRY:
                raise TypeError(f"errcode {code} is already mapped to {_REGISTRY[code].__name__}")
            _REGISTRY[code] = cls

    def __init__(
        self, errcode: int, errmsg: str = "", path: str = "", *, headers: dict[str, str] | None = None
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.path = path
        where = path or "API"
        detail = f"WeChat {where} answered errcode {errcode}" + (f": {errmsg}" if errmsg else "")
        super().__init__(detail, headers=headers, errcode=errcode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errcode={self.errcode}, errmsg={self.errmsg!r}, path={self.path!r})"


class WeChatUnavailable(ServiceUnavailable):
    """WeChat could not be reached, or answered something that is not a WeChat JSON answer."""

    type_slug = "wechat-unavailable"
    title = "WeChat unavailable"
    retryable: ClassVar[bool] = True


# --- transient ------------------------------------------------------------------------------------


class SystemBusy(WeChatAPIError, errcodes=(-1,)):
    # -1 is WeChat saying "busy, did nothing, try again": the one errcode safe to replay even for
    # a POST that sends a message.
    status = 503
    type_slug = "wechat-system-busy"
    title = "WeChat is busy"
    retryable = True
    transient = True


class MinuteQuotaExceeded(WeChatAPIError, errcodes=(45011,)):
    # "api minute-quota reach limit mustslower retry next minute": the window is the wall-clock minute.
    status = 503
    type_slug = "wechat-minute-quota"
    title = "WeChat per-minute quota reached"
    retryable = True

    def __init__(
        self, errcode: int, errmsg: str = "", path: str = "", *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(errcode, errmsg, path, headers={"Retry-After": "60", **(headers or {})})


class InvalidAccessToken(WeChatAPIError, errcodes=tuple(sorted(TOKEN_ERRCODES))):
    # The client already invalidated, re-fetched and retried once before raising this. A later
    # attempt gets a fresh token, so a consumer may retry it after a delay.
    type_slug = "wechat-invalid-access-token"
    title = "WeChat rejected the access token"
    retryable = True


# --- the app's own credentials or server setup: needs a human ------------------------------------


class WeChatCredentialError(WeChatAPIError):
    """The appid/secret pair or the server's IP is not accepted; nothing works until someone fixes it."""

    type_slug = "wechat-credentials"
    title = "WeChat rejected the app credentials"


class InvalidGrantType(WeChatCredentialError, errcodes=(40002,)):
    type_slug = "wechat-invalid-grant-type"


class InvalidAppId(WeChatCredentialError, errcodes=(40013,)):
    type_slug = "wechat-invalid-appid"


class InvalidAppSecret(WeChatCredentialError, errcodes=(40125,)):
    type_slug = "wechat-invalid-appsecret"


class IpNotWhitelisted(WeChatCredentialError, errcodes=(40164,)):
    type_slug = "wechat-ip-not-whitelisted"


class IpNeedsConfirmation(WeChatCredentialError, errcodes=(89503,)):
    # The IP is in the whitelist but an admin must confirm the call in the MP console once.
    type_slug = "wechat-ip-needs-confirmation"


# --- identity ------------------------------------------------------------------------------------


class InvalidOpenid(WeChatAPIError, errcodes=(40003,)):
    # Also what WeChat says for an openid of another app or a user who does not follow the OA.
    type_slug = "wechat-invalid-openid"
    title = "WeChat does not know this openid"


class InvalidCode(WeChatAPIError, errcodes=(40029,)):
    # A login/phone code comes from the end user's client, so a bad one is the caller's error.
    # WeChat also answers 40029 for an expired (5 min) or reused code.
    status = 400
    type_slug = "wechat-invalid-code"
    title = "Invalid or expired WeChat code"


class CodeUsed(WeChatAPIError, errcodes=(40163,)):
    status = 400
    type_slug = "wechat-code-used"
    title = "WeChat code already used"


class CodeBlocked(WeChatAPIError, errcodes=(40226,)):
    # WeChat intercepted the login of a user it considers high-risk.
    status = 403
    type_slug = "wechat-code-blocked"
    title = "WeChat blocked this login"


# --- messages ------------------------------------------------------------------------------------


class InvalidTemplateId(WeChatAPIError, errcodes=(40037,)):
    type_slug = "wechat-invalid-template"
    title = "Invalid WeChat template id"


class InvalidPage(WeChatAPIError, errcodes=(41030,)):
    # The page must exist in the *released* mini-program version.
    type_slug = "wechat-invalid-page"
    title = "Invalid mini-program page"


class RequirePost(WeChatAPIError, errcodes=(43002,)):
    type_slug = "wechat-require-post"
    title = "WeChat requires POST"


class RequireSubscribe(WeChatAPIError, errcodes=(43004,)):
    type_slug = "wechat-require-subscribe"
    title = "The user does not follow the account"


class UserRefusedMessage(WeChatAPIError, errcodes=(43101,)):
    # Subscribe messages are one-shot: each acceptance allows one send.
    type_slug = "wechat-user-refused"
    title = "The user has not accepted this message"


class DailyQuotaExceeded(WeChatAPIError, errcodes=(45009,)):
    # Resets at midnight (or by /cgi-bin/clear_quota, 10 times a month): not worth a quick retry.
    type_slug = "wechat-daily-quota"
    title = "WeChat daily quota reached"


class ReplyTimeLimit(WeChatAPIError, errcodes=(45015,)):
    # Customer-service messages are allowed only within 48 h of the user's last interaction.
    type_slug = "wechat-reply-time-limit"
    title = "Customer-service reply window closed"


class CustomerServiceLimit(WeChatAPIError, errcodes=(45047,)):
    type_slug = "wechat-customer-service-limit"
    title = "Customer-service message limit reached"


class DataFormatError(WeChatAPIError, errcodes=(47001,)):
    type_slug = "wechat-data-format"
    title = "WeChat could not parse the request body"


class ArgumentInvalid(WeChatAPIError, errcodes=(47003,)):
    # errmsg names the offending field, e.g. "data.thing3.value is emtpy".
    type_slug = "wechat-argument-invalid"
    title = "WeChat rejected an argument"


class ApiUnauthorized(WeChatAPIError, errcodes=(48001,)):
    type_slug = "wechat-api-unauthorized"
    title = "The app has no permission for this WeChat API"


# --- WeChat Shop (channels/ec) -------------------------------------------------------------------


class ShopSystemError(WeChatAPIError, errcodes=(10100001,)):
    type_slug = "wechat-shop-system-error"
    title = "WeChat Shop system error"
    retryable = True
    transient = True


class ShopInvalidArgument(WeChatAPIError, errcodes=(10100002,)):
    type_slug = "wechat-shop-invalid-argument"
    title = "WeChat Shop rejected an argument"


class ShopNotFound(WeChatAPIError, errcodes=(10100003,)):
    type_slug = "wechat-shop-not-found"
    title = "WeChat Shop has no such record"


def error_for(errcode: int, errmsg: str, path: str) -> WeChatAPIError:
    """The typed error for a WeChat answer; an unmapped errcode gets the base class (not retryable)."""
    if errcode in TOKEN_ERRCODES and path.endswith(TOKEN_ENDPOINTS):
        # From the token endpoint itself 40001 means a wrong secret, not a stale token: retrying
        # with a "fresh" token would be meaningless.
        return WeChatCredentialError(errcode, errmsg, path)
    return _REGISTRY.get(errcode, WeChatAPIError)(errcode, errmsg, path)


def parse_errcode(value: Any) -> int | None:
    """The errcode of an answer: 0 when absent (success may omit it), None when it is not a number."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def mapped_errcodes() -> dict[int, type[WeChatAPIError]]:
    """A copy of the errcode → class registry (for tests and docs)."""
    return dict(_REGISTRY)
