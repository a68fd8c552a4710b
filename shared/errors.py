"""One error hierarchy for Siyu.

Every error a request can end in is a :class:`SiyuError` carrying its HTTP status and an RFC 9457
problem type; the app factory renders them as ``application/problem+json``. Code that is not in a
request (consumers, relays) uses the same classes so a failure reads the same everywhere.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SiyuError(Exception):
    status: ClassVar[int] = 500
    type_slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    # A dependency was away (not the work's fault): a consumer holds the event and tries again
    # without spending its retry budget (``shared.db.is_transient``).
    transient: ClassVar[bool] = False

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://siyu.dev/problems/{self.type_slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(SiyuError):
    status = 400
    type_slug = "bad-request"
    title = "Bad request"


class Unauthorized(SiyuError):
    status = 401
    type_slug = "unauthorized"
    title = "Unauthorized"


class Forbidden(SiyuError):
    status = 403
    type_slug = "forbidden"
    title = "Forbidden"


class NotFound(SiyuError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(SiyuError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(SiyuError):
    status = 413
    type_slug = "payload-too-large"
    title = "Payload too large"


class Unprocessable(SiyuError):
    status = 422
    type_slug = "unprocessable"
    title = "Unprocessable content"


class TooManyRequests(SiyuError):
    status = 429
    type_slug = "rate-limited"
    title = "Too many requests"


class UpstreamError(SiyuError):
    """A dependency (WeChat, another service) failed in a way the caller may retry later."""

    status = 502
    type_slug = "upstream-error"
    title = "Upstream error"


class ServiceUnavailable(SiyuError):
    status = 503
    type_slug = "unavailable"
    title = "Service unavailable"
    transient = True


class ConfigurationError(SiyuError):
    """Raised at start when a setting is missing or invalid; the process prints one line and exits."""

    type_slug = "configuration-error"
    title = "Configuration error"


# --- problems more than one service (and the mini-program) know by their type -----------------------
# Identity raises them; the gateway maps identity's answers onto the same classes, so a problem type
# is defined once.


class InvalidWeChatCode(Unauthorized):
    type_slug = "invalid-code"
    title = "Invalid, expired or used WeChat code"


class InvalidPhoneCode(Unauthorized):
    type_slug = "invalid-phone-code"
    title = "Invalid, expired or used phone number code"


class LoginBlocked(Forbidden):
    type_slug = "login-blocked"
    title = "WeChat blocked this login"


class PhoneTaken(Conflict):
    type_slug = "phone-taken"
    title = "Phone number bound to another member"


class MemberNotFound(NotFound):
    type_slug = "member-not-found"
    title = "Member not found"


class UnknownApp(Unprocessable):
    type_slug = "unknown-app"
    title = "Not one of the brand's apps of that kind"


class WeChatBusy(ServiceUnavailable):
    type_slug = "wechat-busy"
    title = "WeChat is busy; retry later"


class DependencyUnavailable(ServiceUnavailable):
    type_slug = "dependency-unavailable"
    title = "Temporarily unavailable"


# Commerce's problems: the mini-program tells them apart by type (contracts.md), and the gateway
# forwards commerce's answers unchanged.


class InsufficientPoints(Conflict):
    type_slug = "insufficient-points"
    title = "Not enough points"


class SoldOut(Conflict):
    type_slug = "sold-out"
    title = "Sold out"


class RewardNotFound(NotFound):
    type_slug = "reward-not-found"
    title = "No such reward"


class RedemptionFailed(UpstreamError):
    type_slug = "redemption-failed"
    title = "The reward could not be fulfilled; the points were returned"


class AlreadyCheckedIn(Conflict):
    type_slug = "already-checked-in"
    title = "Already checked in today"


class IdempotencyKeyRequired(BadRequest):
    type_slug = "idempotency-key-required"
    title = "Idempotency-Key header required"
