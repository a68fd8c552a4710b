"""Body cap for the mini-program API: 413 before a byte over the cap is buffered or parsed.

A declared ``Content-Length`` over the cap is refused without reading; a chunked body is counted
while it streams, and the read stops at the first chunk over the cap. The body is read (and
cached) before FastAPI's handler runs, which then finds it through ``Request.body()`` (the
documented custom-``Request`` pattern), so every route of the router is covered.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from services.gateway.settings import GatewaySettings
from shared.app import runtime_of
from shared.errors import BadRequest, PayloadTooLarge


class _CappedRequest(Request):
    limit: int = 0

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.limit:
                    raise PayloadTooLarge(f"the request body is over {self.limit} bytes")
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


class CappedBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def capped(request: Request) -> Response:
            settings = runtime_of(request).settings
            assert isinstance(settings, GatewaySettings)
            limit = settings.api_max_body_bytes
            declared = request.headers.get("content-length")
            if declared is not None:
                if not declared.isdigit():
                    raise BadRequest("Content-Length is not a number")
                if int(declared) > limit:
                    raise PayloadTooLarge(f"the request body is over {limit} bytes")
            capped_request = _CappedRequest(request.scope, request.receive)
            capped_request.limit = limit
            if request.method in ("POST", "PUT", "PATCH"):
                # Read here, not inside FastAPI's handler: it turns any error while reading into a 400.
                await capped_request.body()
            return await handler(capped_request)

        return capped
