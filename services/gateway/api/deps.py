"""Request dependencies of the mini-program API: who is calling, and may they call now.

Order on every route: the body cap (the route class reads the body first, so an oversized body is
a 413 before anything else runs), then the client-address limit (router level), the session token
and the member's limit, the route's own limit, then body validation. Rate-limit counters are the
only thing a rejected request writes, on purpose: a flood of bad requests must spend its budget too.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.gateway.auth import MemberSession, MissingSession
from services.gateway.clients import GatewayDeps
from services.gateway.idempotency import KEY_HEADER, validate_key
from shared.app import runtime_of

_bearer = HTTPBearer(auto_error=False, description="The token from POST /api/v1/sessions")


async def gateway_deps(request: Request) -> GatewayDeps:
    deps: GatewayDeps = runtime_of(request).deps
    return deps


Deps = Annotated[GatewayDeps, Depends(gateway_deps)]


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


async def limit_client(request: Request, deps: Deps) -> None:
    await deps.limiter.enforce(deps.limits.ip, client_address(request), who="client address")


async def limit_login(request: Request, deps: Deps) -> None:
    await deps.limiter.enforce(deps.limits.login_ip, client_address(request), who="client address")


async def current_member(
    deps: Deps, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> MemberSession:
    if credentials is None:
        raise MissingSession()
    member = deps.tokens.verify(credentials.credentials)
    await deps.limiter.enforce(deps.limits.member, str(member.member_id), who="member")
    return member


CurrentMember = Annotated[MemberSession, Depends(current_member)]


async def limit_events(member: CurrentMember, deps: Deps) -> None:
    await deps.limiter.enforce(deps.limits.events, str(member.member_id), who="member")


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
