"""Body caps: 413 before a byte over the cap is buffered or parsed.

A declared ``Content-Length`` over the cap is refused without reading; a chunked body is counted
while it streams, and the read stops at the first chunk over the cap. One reader serves both
doors: WeChat pushes (``GATEWAY_MAX_BODY_BYTES``) and the mini-program API
(``GATEWAY_API_MAX_BODY_BYTES``, through :class:`CappedBodyRoute`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from services.gateway.settings import GatewaySettings
from shared.app import runtime_of
from shared.errors import BadRequest, PayloadTooLarge


def check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes")


async def read_capped(request: Request, limit: int) -> bytes:
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
            settings = runtime_of(request).settings
            assert isinstance(settings, GatewaySettings)
            limit = settings.api_max_body_bytes
            if request.method in ("POST", "PUT", "PATCH"):
                # Read here, not inside FastAPI's handler: it turns any error while reading into a 400.
                request._body = await read_capped(request, limit)
            else:
                check_declared_length(request, limit)
            return await handler(request)

        return capped
