"""The gateway's internal clients to identity, commerce and notify, and how their answers map to ours.

Every client comes from :func:`shared.http.create_client` with the internal credential, so each
call carries ``X-Siyu-Internal-Token``, the request id and the trace context. An upstream's
answer is consumed like untrusted input: only the statuses a route expects pass, bodies are
validated, and every other outcome becomes one of our problems (a 5xx or a timeout never leaks
an upstream's body to the mini-program).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from services.gateway.auth import SessionTokens
from services.gateway.idempotency import IdempotencyStore
from services.gateway.ratelimit import Limit, RateLimiter
from services.gateway.settings import GatewaySettings
from shared.app import Runtime
from shared.errors import Conflict, Forbidden, ServiceUnavailable, SiyuError, Unauthorized, UpstreamError
from shared.http import create_client
from shared.observability import get_logger

log = get_logger(__name__)

Service = Literal["identity", "commerce", "notify"]
DEFAULT_RETRY_AFTER = 5
MAX_RETRY_AFTER = 300


# ---------------------------------------------------------------------------------------------
# Problems the mini-program sees when an upstream says no


class InvalidLoginCode(Unauthorized):
    type_slug = "invalid-code"
    title = "Invalid login code"


class LoginBlocked(Forbidden):
    type_slug = "login-blocked"
    title = "Login blocked by WeChat"


class InvalidPhoneCode(Unauthorized):
    type_slug = "invalid-phone-code"
    title = "Invalid phone number code"


class PhoneTaken(Conflict):
    type_slug = "phone-taken"
    title = "Phone number already bound"


class MemberGone(Unauthorized):
    type_slug = "member-not-found"
    title = "Member not found"


class DependencyUnavailable(ServiceUnavailable):
    type_slug = "dependency-unavailable"
    title = "Temporarily unavailable"


@dataclass(frozen=True)
class UpstreamAnswer:
    status: int
    problem: dict[str, Any]
    retry_after: int

    @property
    def type_slug(self) -> str:
        return str(self.problem.get("type", "")).rsplit("/", 1)[-1]

    def extras(self) -> dict[str, Any]:
        """What of the upstream's problem is safe to pass on (WeChat's errcode, for support)."""
        code = self.problem.get("errcode")
        return {"errcode": code} if isinstance(code, int) else {}


ErrorMap = Mapping[int, Callable[[UpstreamAnswer], SiyuError]]


def _retry_after(response: httpx.Response) -> int:
    raw = response.headers.get("retry-after", "")
    seconds = int(raw) if raw.isdigit() else DEFAULT_RETRY_AFTER
    return max(1, min(seconds, MAX_RETRY_AFTER))


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content[:16384])
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _unavailable(service: str, answer: UpstreamAnswer | None = None) -> SiyuError:
    retry = answer.retry_after if answer else 2
    return DependencyUnavailable(
        f"{service} is busy or unreachable; retry in {retry} s", headers={"Retry-After": str(retry)}
    )


class Upstreams:
    """One pooled client per internal service; ``request`` turns any answer into data or a problem."""

    def __init__(self, clients: Mapping[str, httpx.AsyncClient]) -> None:
        self._clients = dict(clients)

    @classmethod
    def create(cls, settings: GatewaySettings, *, transport: httpx.AsyncBaseTransport | None = None) -> Upstreams:
        urls = {"identity": settings.identity_url, "commerce": settings.commerce_url, "notify": settings.notify_url}
        return cls(
            {
                name: create_client(
                    url,
                    internal_token=settings.internal_token_value,
                    timeout=settings.upstream_timeout_seconds,
                    transport=transport,
                )
                for name, url in urls.items()
            }
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def request(
        self,
        service: Service,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        expect: frozenset[int] = frozenset({200}),
        errors: ErrorMap | None = None,
    ) -> httpx.Response:
        try:
            response = await self._clients[service].request(method, path, json=json_body)
        except httpx.TransportError as exc:
            log.warning("upstream.unreachable", service=service, path=path, error=repr(exc))
            raise _unavailable(service) from exc
        if response.status_code in expect:
            return response
        answer = UpstreamAnswer(response.status_code, _problem(response), _retry_after(response))
        if answer.status == 401 and answer.type_slug == "unauthorized":
            # Identity's InternalOnly refused our credential: a deployment error, not the user's.
            log.error("upstream.credential_rejected", service=service, path=path)
            raise UpstreamError(f"{service} refused the gateway's internal credential")
        mapped = (errors or {}).get(answer.status)
        if mapped is not None:
            raise mapped(answer)
        if answer.status in (429, 503):
            raise _unavailable(service, answer)
        log.error("upstream.unexpected", service=service, path=path, status=answer.status, problem=answer.problem)
        raise UpstreamError(f"{service} answered {answer.status}")


def parse(model: type[BaseModel], response: httpx.Response, service: str) -> Any:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        log.error("upstream.bad_body", service=service, error=str(exc)[:500])
        raise UpstreamError(f"{service} answered with an unexpected body") from None


# ---------------------------------------------------------------------------------------------
# identity's answers, as far as the gateway reads them


class _Upstream(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LoginResult(_Upstream):
    member_id: uuid.UUID
    openid: str
    unionid_known: bool
    created: bool


class MemberIdentity(_Upstream):
    appid: str
    app_kind: str


class MemberFollow(_Upstream):
    appid: str
    subscribed: bool


class MemberView(_Upstream):
    member_id: uuid.UUID
    unionid_known: bool
    identities: list[MemberIdentity] = []
    follows: list[MemberFollow] = []
    phone_masked: str | None = None


class PhoneBinding(_Upstream):
    phone_masked: str
    country_code: str
    bound: bool


LOGIN_ERRORS: ErrorMap = {
    401: lambda a: InvalidLoginCode(
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


class IdentityLogin:
    """``wx.login`` code → member, through identity (which alone ever sees WeChat's session_key)."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    async def login(self, appid: str, code: str) -> LoginResult:
        response = await self.upstreams.request(
            "identity", "POST", "/internal/logins", json_body={"appid": appid, "code": code}, errors=LOGIN_ERRORS
        )
        result: LoginResult = parse(LoginResult, response, "identity")
        return result


# ---------------------------------------------------------------------------------------------
# The gateway's runtime dependencies (``Runtime.deps``): built once per process at start


@dataclass(frozen=True)
class ApiLimits:
    ip: Limit
    login_ip: Limit
    member: Limit
    events: Limit

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> ApiLimits:
        return cls(
            ip=Limit("ip", s.rate_ip_per_minute),
            login_ip=Limit("login-ip", s.rate_login_ip_per_minute),
            member=Limit("member", s.rate_member_per_minute),
            events=Limit("events", s.rate_events_per_minute),
        )


@dataclass
class GatewayDeps:
    upstreams: Upstreams
    tokens: SessionTokens
    limiter: RateLimiter
    limits: ApiLimits
    idempotency: IdempotencyStore

    async def aclose(self) -> None:
        await self.upstreams.aclose()


async def make_deps(rt: Runtime) -> GatewayDeps:
    settings = rt.settings
    assert isinstance(settings, GatewaySettings)
    return GatewayDeps(
        upstreams=Upstreams.create(settings),
        tokens=SessionTokens(
            settings.session_secret_value, settings.previous_session_secrets, ttl=settings.session_ttl_seconds
        ),
        limiter=RateLimiter(rt.engine),
        limits=ApiLimits.from_settings(settings),
        idempotency=IdempotencyStore(
            rt.sessions,
            ttl_seconds=settings.idempotency_ttl_seconds,
            lock_seconds=settings.idempotency_lock_seconds,
        ),
    )
