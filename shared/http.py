"""The one factory for outbound HTTP clients (httpx).

Every client Siyu makes — internal calls between services, the WeChat API client, the sandbox's
pushes — comes from :func:`create_client`, so timeouts, the request id, trace context and the
retry rule are the same everywhere. Retries are bounded and only for idempotent methods: a POST
that creates something is never replayed by the transport (its caller owns an idempotency key).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

import httpx

from shared.observability import outgoing_traceparent, request_id_var

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
INTERNAL_TOKEN_HEADER = "X-Siyu-Internal-Token"
REQUEST_ID_HEADER = "X-Request-Id"


class _ContextTransport(httpx.AsyncBaseTransport):
    """Adds request id and trace context; retries idempotent requests on connect errors and 502-504."""

    def __init__(self, inner: httpx.AsyncBaseTransport, retries: int, backoff: float) -> None:
        self._inner = inner
        self._retries = retries
        self._backoff = backoff

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        rid = request_id_var.get()
        if rid and REQUEST_ID_HEADER not in request.headers:
            request.headers[REQUEST_ID_HEADER] = rid
        if "traceparent" not in request.headers:
            request.headers["traceparent"] = outgoing_traceparent()
        attempts = 1 + (self._retries if request.method in IDEMPOTENT_METHODS else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._inner.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
                if last:
                    raise
            else:
                if last or response.status_code not in (502, 503, 504):
                    return response
                await response.aclose()
            await asyncio.sleep(self._backoff * (2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self._inner.aclose()


def create_client(
    base_url: str = "",
    *,
    timeout: float = 5.0,
    connect_timeout: float = 2.0,
    internal_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    retries: int = 2,
    backoff: float = 0.1,
    max_connections: int = 100,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """Build an ``httpx.AsyncClient``. ``internal_token`` marks a client for Siyu's internal calls."""
    all_headers = dict(headers or {})
    if internal_token:
        all_headers[INTERNAL_TOKEN_HEADER] = internal_token
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    inner = transport or httpx.AsyncHTTPTransport(limits=limits)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        headers=all_headers,
        transport=_ContextTransport(inner, retries, backoff),
    )
