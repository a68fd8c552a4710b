"""Mini-program sign-in and session tokens: the gateway's own login state, never WeChat's ``session_key``.

Sign-in sends the ``wx.login`` code to identity (which alone talks to WeChat and keeps
``session_key``) and signs a token for the member identity answers with.

A token is a JWT (HS256) with a ``kid`` header naming the key that signed it. The gateway signs
with the current secret (``SIYU_SESSION_SECRET``) and verifies with it or any of
``GATEWAY_SESSION_PREVIOUS_SECRETS``, so rotating the secret signs nobody out: move the old secret
to the previous list, deploy, and drop it once the longest token lifetime has passed.

The ``kid`` is derived from the secret (a truncated hash), so every replica agrees on it without
configuration and the secret itself never appears in a token. Verification picks the key by
``kid`` only: a token whose ``kid`` is unknown is refused without trying other keys.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from services.gateway.sessions.schemas import LoginResult
from services.gateway.upstreams import ErrorMap, Upstreams, parse
from shared.errors import DependencyUnavailable, InvalidWeChatCode, LoginBlocked, Unauthorized

ALGORITHM = "HS256"
ISSUER = "siyu-gateway"
AUDIENCE = "siyu-mini-program"
REQUIRED_CLAIMS = ["sub", "appid", "iat", "exp", "jti", "iss", "aud"]
MAX_TOKEN_CHARS = 2048
LEEWAY_SECONDS = 10  # clock skew between replicas
VERIFIED_TOKENS = 8192  # tokens remembered as verified (~3 MB)


class InvalidSession(Unauthorized):
    type_slug = "invalid-session"
    title = "Invalid session"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class MissingSession(Unauthorized):
    type_slug = "session-required"
    title = "Session required"

    def __init__(self) -> None:
        super().__init__(
            "sign in first: POST /api/v1/sessions with a wx.login code, then send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )


@dataclass(frozen=True)
class MemberSession:
    """Who is calling, as the verified token says. The only source of a member id in the API."""

    member_id: uuid.UUID
    appid: str
    jti: str
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    member_id: uuid.UUID


def key_id(secret: str) -> str:
    return hashlib.sha256(b"siyu-session-kid:" + secret.encode()).hexdigest()[:16]


class SessionTokens:
    def __init__(self, current_secret: str, previous_secrets: list[str] | tuple[str, ...] = (), *, ttl: int) -> None:
        self._signing_kid = key_id(current_secret)
        self._signing_key = current_secret
        self._keys = {key_id(s): s for s in previous_secrets}
        self._keys[self._signing_kid] = current_secret
        self.ttl = timedelta(seconds=ttl)
        # Only successful verifications are cached (an exception is never cached by lru_cache).
        self._verified = functools.lru_cache(maxsize=VERIFIED_TOKENS)(self._verify)

    def issue(self, member_id: uuid.UUID, appid: str, *, now: datetime | None = None) -> IssuedToken:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + self.ttl
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(member_id),
            "appid": appid,
            "iat": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, self._signing_key, algorithm=ALGORITHM, headers={"kid": self._signing_kid})
        return IssuedToken(token=token, expires_at=expires, member_id=member_id)

    def verify(self, token: str) -> MemberSession:
        """The session a token names; 401 when it is not one of ours or has expired.

        A token that verified once is remembered (by its exact text) until it expires: the HMAC
        and claim checks are the same every time, and they were a tenth of the CPU of a proxied
        request. Expiry is checked on every use.
        """
        session = self._verified(token)
        if session.expires_at + timedelta(seconds=LEEWAY_SECONDS) < datetime.now(UTC):
            raise InvalidSession("the session has expired; sign in again")
        return session

    def _verify(self, token: str) -> MemberSession:
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidSession("the session token is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidSession("the session token is malformed") from None
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise InvalidSession("the session token was signed with a key this gateway does not know; sign in again")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidSession("the session has expired; sign in again") from None
        except jwt.InvalidTokenError:
            raise InvalidSession("the session token is not valid") from None
        try:
            member_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise InvalidSession("the session token is not valid") from None
        return MemberSession(
            member_id=member_id,
            appid=str(claims["appid"]),
            jti=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )


LOGIN_ERRORS: ErrorMap = {
    401: lambda a: InvalidWeChatCode(
        "the wx.login code is invalid, expired or already used: call wx.login again and sign in with the new code",
        **a.extras(),
    ),
    403: lambda a: LoginBlocked(
        "WeChat refused this login because it considers the account high-risk (errcode 40226). "
        "Retrying will not help; the user has to clear WeChat's security check in the WeChat app first.",
        **a.extras(),
    ),
    503: lambda a: DependencyUnavailable(
        f"WeChat is busy and cannot check the login code now; call wx.login again and retry in {a.retry_after} s",
        headers={"Retry-After": str(a.retry_after)},
        **a.extras(),
    ),
}


class SignIn:
    """``wx.login`` code → member, through identity; then the gateway's own token."""

    def __init__(self, upstreams: Upstreams, tokens: SessionTokens) -> None:
        self.upstreams = upstreams
        self.tokens = tokens

    async def sign_in(self, appid: str, code: str) -> tuple[LoginResult, IssuedToken]:
        # Never re-sent by the transport: a wx.login code is single use.
        response = await self.upstreams.request(
            "identity", "POST", "/internal/logins", json_body={"appid": appid, "code": code}, errors=LOGIN_ERRORS
        )
        login = parse(LoginResult, response, "identity")
        return login, self.tokens.issue(login.member_id, appid)
