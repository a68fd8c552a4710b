"""The sandbox application: WeChat's API on one side, the control API on the other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.wechat.apps import WeChatApps
from tools.wechat_sandbox import (
    api,
    api_kf,
    api_oa,
    control,
    messages_api,
    messages_control,
    shop,
    shop_api,
    shop_control,
)
from tools.wechat_sandbox.messages import MessageCenter
from tools.wechat_sandbox.push import CallbackPusher
from tools.wechat_sandbox.state import Clock, SandboxState, WeChatApiError


def create_app(
    apps: WeChatApps,
    gateway_url: str,
    seed: int = 0,
    clock: Clock = time.time,
    *,
    push_timeout: float = 5.0,
    push_attempts: int = 3,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build a sandbox. ``clock`` drives token and code lifetimes and push times (tests inject one);
    ``transport`` replaces the network for pushes to ``gateway_url``."""
    state = SandboxState(apps, seed=seed, clock=clock)
    pusher = CallbackPusher(state, gateway_url, timeout=push_timeout, max_attempts=push_attempts, transport=transport)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await pusher.aclose()

    app = FastAPI(
        title="Siyu WeChat sandbox",
        description="An offline stand-in for api.weixin.qq.com and WeChat's callback pushes.",
        lifespan=lifespan,
    )
    app.state.sandbox = state
    app.state.pusher = pusher
    messages = app.state.messages = MessageCenter(apps, seed)

    @app.exception_handler(WeChatApiError)
    async def _wechat_error(_: Request, exc: WeChatApiError) -> JSONResponse:
        return JSONResponse(exc.body())  # WeChat reports errors with HTTP 200

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # A WeChat API called with the wrong method answers 43002 "require POST method" (or 43001
        # "require GET method") with HTTP 200; control routes keep FastAPI's ordinary errors.
        if exc.status_code == 405 and not request.url.path.startswith("/sandbox"):
            errcode = 43002 if request.method == "GET" else 43001
            return JSONResponse(WeChatApiError(errcode).body())
        return await http_exception_handler(request, exc)

    @app.middleware("http")
    async def _enforce_limits(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Counted per app, so the token decides; a bad token is left to the route's 40001/42001.
        # Nothing awaits between the check and the count, so concurrent calls cannot overshoot.
        limit = messages.limits.get(request.url.path)
        if limit is not None:
            try:
                token = state.tokens.check(request.query_params.get("access_token"))
            except WeChatApiError:
                token = None
            if token is not None and (errcode := limit.admit(token.appid, state.now())) is not None:
                return JSONResponse(WeChatApiError(errcode).body())
        return await call_next(request)

    @app.middleware("http")
    async def _inject_faults(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if not path.startswith("/sandbox") and (fault := state.take_fault(path)) is not None:
            if fault.delay_ms:
                await asyncio.sleep(fault.delay_ms / 1000)
            if fault.errcode is not None:
                return JSONResponse(WeChatApiError(fault.errcode, fault.errmsg).body())
        return await call_next(request)

    @app.get("/health", tags=["Sandbox control"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(api.router)
    app.include_router(api_kf.router)
    app.include_router(api_oa.router)
    app.include_router(shop_api.router)
    app.include_router(control.router)
    app.include_router(shop.router)
    app.include_router(shop_control.router)
    app.include_router(messages_api.router)
    app.include_router(messages_control.router)
    return app
