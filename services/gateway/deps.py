"""The gateway's dependencies, built once at start, and what every API route depends on per request.

Order on every mini-program API route: the body cap (the route class reads the body first, so an
oversized body is a 413 before anything else runs), then the session token (verified in memory),
then ONE rate-limit statement counting the request in every bucket that applies to it (its client
address; its member and route once the token is valid), then body validation. Rate-limit counters
are the only thing a rejected request writes, on purpose: a flood of bad requests must spend its
budget too.

The operator API (``/admin/v1``) takes ``Authorization: Bearer <SIYU_ADMIN_TOKEN>``, compared in
constant time; a request without it, or with another, spends its address's budget and gets 401.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends, Header, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.gateway.idempotency.service import KEY_HEADER, IdempotencyStore, validate_key
from services.gateway.pushes.repository import PushIds, PushWriter
from services.gateway.ratelimit.schemas import ApiLimits, Bucket, Limit
from services.gateway.ratelimit.service import RateLimiter
from services.gateway.replies.service import ReplyRulesCopy
from services.gateway.sessions.service import InvalidSession, MemberSession, MissingSession, SessionTokens
from services.gateway.settings import GatewaySettings
from services.gateway.upstreams import Service, Upstreams
from shared.app import Runtime, get_deps
from shared.db import Database
from shared.errors import BadRequest, IdempotencyKeyRequired, NotFound, PayloadTooLarge, Unauthorized
from shared.wechat.apps import WeChatApp, WeChatApps
from shared.wechat.crypto import MessageCrypto


@dataclass
class GatewayDeps:
    settings: GatewaySettings
    db: Database
    apps: WeChatApps
    crypto: dict[str, MessageCrypto]  # per appid, for the apps that have an EncodingAESKey
    upstreams: Upstreams
    tokens: SessionTokens
    limiter: RateLimiter
    idempotency: IdempotencyStore
    reply_rules: ReplyRulesCopy
    push_ids: PushIds
    push_writer: PushWriter

    def app(self, appid: str) -> WeChatApp:
        app = self.apps.get(appid)
        if app is None:
            raise NotFound(f"no WeChat app {appid!r} is configured")
        return app

    @property
    def limits(self) -> ApiLimits:
        return self.limiter.limits

    async def aclose(self) -> None:
        await self.push_writer.aclose()
        await self.upstreams.aclose()


async def make_deps(
    rt: Runtime[GatewaySettings], *, upstream_transports: Mapping[Service, httpx.AsyncBaseTransport] | None = None
) -> GatewayDeps:
    """``upstream_transports`` replace the network to identity, commerce and notify (tests run them
    in-process)."""
    settings = rt.settings
    apps = settings.wechat_apps
    copy = ReplyRulesCopy()
    await copy.refresh(rt.db)  # serve the rules notify last published from the first push on
    return GatewayDeps(
        settings=settings,
        db=rt.db,
        apps=apps,
        crypto={app.appid: MessageCrypto.for_app(app) for app in apps.apps if app.encoding_aes_key},
        upstreams=Upstreams.create(settings, transports=upstream_transports),
        tokens=SessionTokens(
            settings.session_secret_value, settings.previous_session_secrets, ttl=settings.session_ttl_seconds
        ),
        limiter=RateLimiter(rt.db, ApiLimits.from_settings(settings)),
        idempotency=IdempotencyStore(
            rt.db, ttl_seconds=settings.idempotency_ttl_seconds, lock_seconds=settings.idempotency_lock_seconds
        ),
        reply_rules=copy,
        push_ids=PushIds(rt.db),
        push_writer=PushWriter(rt.db, window=settings.push_batch_window_ms / 1000),
    )


Deps = Annotated[GatewayDeps, Depends(get_deps)]


# --- body caps ------------------------------------------------------------------------------------


def check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes")


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, or 413 before a byte over ``limit`` is buffered: a declared length over the cap is
    refused unread; a chunked body is counted while it streams."""
    check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class CappedBodyRoute(APIRoute):
    """The body is read (and cached on the request) before FastAPI's handler runs, which then finds
    it through ``Request.body()``, so every route of the router is covered."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def capped(request: Request) -> Response:
            deps: GatewayDeps = request.app.state.deps
            limit = deps.settings.api_max_body_bytes
            if request.method in ("POST", "PUT", "PATCH"):
                # Read here, not inside FastAPI's handler: it turns any error while reading into a 400.
                request._body = await read_capped(request, limit)
            else:
                check_declared_length(request, limit)
            return await handler(request)

        return capped


# --- who is calling -------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="The token from POST /api/v1/sessions")


def client_address(request: Request) -> str:
    """The caller's address as uvicorn saw it (behind a proxy: ``FORWARDED_ALLOW_IPS`` decides
    whether X-Forwarded-For is believed). An IPv6 client is limited by its /64, which one
    subscriber usually holds entirely."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else address)


async def _client_address(request: Request) -> str:  # async: a plain def would run in the thread pool
    return client_address(request)


ClientAddress = Annotated[str, Depends(_client_address)]


async def limit_sign_in(address: ClientAddress, deps: Deps) -> None:
    """Sign-in: the client address's general and sign-in buckets, in one statement."""
    limits = deps.limits
    await deps.limiter.enforce(
        [Bucket(limits.ip, address, "client address"), Bucket(limits.login_ip, address, "client address")]
    )


class MemberAuth:
    """The signed-in member of this request, counted in its buckets (``route``: the route's own limit).

    A request without a valid token still spends its address's budget before its 401.
    """

    def __init__(self, route: Callable[[ApiLimits], Limit] | None = None) -> None:
        self.route = route

    async def __call__(
        self,
        address: ClientAddress,
        deps: Deps,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> MemberSession:
        limits = deps.limits
        buckets = [Bucket(limits.ip, address, "client address")]
        try:
            if credentials is None:
                raise MissingSession()
            member = deps.tokens.verify(credentials.credentials)
        except (MissingSession, InvalidSession):
            await deps.limiter.enforce(buckets)
            raise
        member_key = str(member.member_id)
        buckets.append(Bucket(limits.member, member_key, "member"))
        if self.route is not None:
            buckets.append(Bucket(self.route(limits), member_key, "member"))
        await deps.limiter.enforce(buckets)
        return member


CurrentMember = Annotated[MemberSession, Depends(MemberAuth())]
EventsMember = Annotated[MemberSession, Depends(MemberAuth(lambda limits: limits.events))]
WritingMember = Annotated[MemberSession, Depends(MemberAuth(lambda limits: limits.writes))]


async def idempotency_key(  # async: plain functions would run in the thread pool per request
    key: Annotated[
        str | None,
        Header(
            alias=KEY_HEADER,
            description="Optional. A unique key (a UUID v4) per operation: a retry with the same key and body "
            "gets the first answer again (for 24 h, with `Idempotent-Replayed: true`); 409 while the first "
            "is still running; 422 if the body differs.",
        ),
    ] = None,
) -> str | None:
    return validate_key(key)


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


async def required_idempotency_key(request: Request) -> str:
    """The header read by hand: declared as a FastAPI parameter, a missing one would be a 422 of the
    schema rather than the contract's 400 ``idempotency-key-required`` (OpenAPI: ``REQUIRED_KEY_DOC``)."""
    key = validate_key(request.headers.get(KEY_HEADER))
    if key is None:
        raise IdempotencyKeyRequired(
            "this request spends something: send an Idempotency-Key header (a new UUID v4 per operation, "
            "the same one when retrying it)"
        )
    return key


REQUIRED_KEY_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": KEY_HEADER,
            "in": "header",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "Required. A unique key (a UUID v4) per operation: a retry with the same key gets the "
            "first answer again (for 24 h, with `Idempotent-Replayed: true`) and never spends twice; 409 while "
            "the first is still running; 422 if the request differs. Without it: 400 `idempotency-key-required`.",
        }
    ]
}
RequiredIdempotencyKey = Annotated[str, Depends(required_idempotency_key)]


# --- the operator ---------------------------------------------------------------------------------

_admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken", description="SIYU_ADMIN_TOKEN")


class InvalidAdminToken(Unauthorized):
    type_slug = "invalid-admin-token"
    title = "Operator token required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="siyu-admin"'})


async def require_operator(
    address: ClientAddress,
    deps: Deps,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    """The operator API's door: the admin token, compared in constant time."""
    expected = deps.settings.admin_token_value.encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    if given and hmac.compare_digest(given, expected):
        return
    await deps.limiter.enforce([Bucket(deps.limits.ip, address, "client address")])
    if credentials is None:
        raise InvalidAdminToken("the operator API needs Authorization: Bearer <SIYU_ADMIN_TOKEN>")
    raise InvalidAdminToken("the operator token is not valid")


Operator = Depends(require_operator)
