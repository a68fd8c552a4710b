"""The one factory for outbound HTTP clients (httpx).

Every client Siyu makes — internal calls between services, the WeChat API client, the sandbox's
pushes — comes from :func:`create_client`, so timeouts, the request id, trace context and the
retry rule are the same everywhere. Retries are bounded and only for requests that are safe to
send twice: idempotent methods, and a POST its caller marks safe (``extensions=RETRY_SAFE``: a
read sent as POST, or one the server de-duplicates). A POST that creates something is never
replayed by the transport (its caller owns an idempotency key).

Keep-alive: a pooled connection is dropped after ``KEEPALIVE_EXPIRY`` idle seconds, well before
the server side closes it (``shared.serve`` keeps idle connections ``SERVER_KEEPALIVE`` seconds),
so a client never writes a request into a connection the server is closing. A request that still
fails before any response byte (the server went away under a reused connection: a reset, EOF)
is sent once more at once on a new connection when it is safe to send twice.
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
# Pass as ``extensions=`` on a POST that is safe to send twice (a read, or de-duplicated upstream).
RETRY_SAFE: dict[str, object] = {"siyu_retry_safe": True}
# Client idle keep-alive; shared.serve keeps the server side open longer (SERVER_KEEPALIVE).
KEEPALIVE_EXPIRY = 20.0
SERVER_KEEPALIVE = 65


class _ContextTransport(httpx.AsyncBaseTransport):
    """Adds request id and trace context; retries safe requests that got no answer, and 502-504."""

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
        safe = request.method in IDEMPOTENT_METHODS or bool(request.extensions.get("siyu_retry_safe"))
        attempts = 1 + (self._retries if safe else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._inner.handle_async_request(request)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                # A dead pooled connection: the pool has dropped it, so the retry opens a new one
                # now; waiting would only add latency.
                if last:
                    raise
                continue
            except (httpx.ConnectError, httpx.ConnectTimeout):
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
    """Build an ``httpx.AsyncClient``. ``internal_token`` marks a client for Siyu's internal calls.

    ``max_connections`` should be what the caller really runs at once: httpcore checks every pooled
    connection on each request (a socket poll per idle one), so an oversized pool costs CPU on
    every call.
    """
    all_headers = dict(headers or {})
    if internal_token:
        all_headers[INTERNAL_TOKEN_HEADER] = internal_token
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY
    )
    inner = transport or httpx.AsyncHTTPTransport(limits=limits)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        headers=all_headers,
        transport=_ContextTransport(inner, retries, backoff),
    )
