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
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import httpcore
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


class _AsyncioStream(httpcore.AsyncNetworkStream):
    """A plain TCP connection on asyncio streams (uvloop's, in the services).

    httpcore's default backend goes through anyio, whose per-call bookkeeping (and a socket poll
    per pooled connection on every request, to see whether the server closed it) was the largest
    share of the gateway's CPU on proxied routes. Here that check reads the stream's own state.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 - httpcore's API
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 - httpcore's API
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("this backend serves plain HTTP (internal calls); https goes through anyio")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Idle and readable means the server closed it (or sent garbage): not reusable.
            return self._reader.at_eof() or self._writer.transport.is_closing()
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        return None


class _AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's API
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by Siyu's internal calls")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _plain_http_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport with its pool on the asyncio backend (plain HTTP: Siyu's internal calls)."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx builds its pool without a way to pass a network backend; the pool it builds is replaced
    # by one with the same limits (uv.lock pins httpx, tests/integration/test_gateway_upstreams.py
    # runs this path against a real server).
    transport._pool = httpcore.AsyncConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=_AsyncioBackend(),
    )
    return transport


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
    if transport is not None:
        inner = transport
    elif base_url.startswith("http://"):
        inner = _plain_http_transport(limits)
    else:
        inner = httpx.AsyncHTTPTransport(limits=limits)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        headers=all_headers,
        transport=_ContextTransport(inner, retries, backoff),
    )
