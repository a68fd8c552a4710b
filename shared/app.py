"""The app factory every service uses: lifespan, health, metrics, problems, request ids, tracing.

A service's ``app.py`` is short: its settings, ``create_service_app(...)`` with its tables,
routers and subscription manifest, and nothing cross-cutting of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.bus.consumer import Handler, InboxConsumer
from shared.bus.outbox import Outbox, OutboxRelay
from shared.bus.retention import prune_forever
from shared.bus.tables import BusTables
from shared.bus.topology import Topology
from shared.db import create_engine, create_sessionmaker
from shared.errors import ServiceUnavailable, SiyuError, Unauthorized, Unprocessable
from shared.http import INTERNAL_TOKEN_HEADER
from shared.observability import configure_logging, continue_trace, get_logger, new_request_id, request_id_var
from shared.settings import ServiceSettings

log = get_logger(__name__)

HTTP_REQUESTS = Counter("siyu_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
HTTP_SECONDS = Histogram(
    "siyu_http_request_seconds",
    "HTTP request latency",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


@dataclass
class Runtime:
    """A running service's connections: database, broker, outbox relay and consumer."""

    settings: ServiceSettings
    tables: BusTables
    topology: Topology
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    connection: AbstractRobustConnection | None = None
    relay: OutboxRelay | None = None
    consumer: InboxConsumer | None = None
    deps: Any = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


async def connect_broker(url: str) -> AbstractRobustConnection:
    try:
        return await aio_pika.connect_robust(url, timeout=5, client_properties={"connection_name": "siyu"})
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        raise ServiceUnavailable(
            f"RabbitMQ is not reachable at {url.split('@')[-1]} ({exc!r}). "
            "Start it (rabbitmq-server -detached) or set SIYU_AMQP_URL."
        ) from exc


def problem_response(exc: SiyuError, request: Request | None = None) -> JSONResponse:
    body = exc.problem(str(request.url.path) if request else None)
    rid = request_id_var.get()
    if rid:
        body["request_id"] = rid
    return JSONResponse(body, status_code=exc.status, media_type="application/problem+json", headers=exc.headers)


class RequestContextMiddleware:
    """Pure ASGI (cheap on the hot path): request id, trace context, access metrics."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or new_request_id()
        request_id_var.set(rid)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(service=self.service, request_id=rid)
        tp = headers.get(b"traceparent")
        continue_trace(tp.decode("latin-1") if tp else None)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(self.service, scope["method"], path, str(status)).inc()
            HTTP_SECONDS.labels(self.service, path).observe(time.perf_counter() - started)


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed before the response is sent, rolled back on error."""
    async with runtime_of(request).sessions() as session, session.begin():
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


async def require_internal(request: Request) -> None:
    """Internal endpoints: only Siyu's own services, with the internal credential."""
    given = request.headers.get(INTERNAL_TOKEN_HEADER, "")
    expected = runtime_of(request).settings.internal_token_value
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("this endpoint is internal: a valid X-Siyu-Internal-Token is required")


InternalOnly = Depends(require_internal)

DepsFactory = Callable[[Runtime], Awaitable[Any]]


def create_service_app(
    settings: ServiceSettings,
    *,
    tables: BusTables,
    routers: Iterable[APIRouter] = (),
    subscriptions: Mapping[str, Handler] | None = None,
    make_deps: DepsFactory | None = None,
    topology: Topology | None = None,
    run_relay: bool = True,
    background: Sequence[Callable[[Runtime], Coroutine[Any, Any, None]]] = (),
    title: str | None = None,
    description: str = "",
) -> FastAPI:
    service = settings.service_name
    configure_logging(service, settings.log_level)
    topo = topology or Topology(namespace=settings.amqp_namespace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.sqlalchemy_url, pool_size=settings.db_pool_size)
        rt = Runtime(
            settings=settings,
            tables=tables,
            topology=topo,
            engine=engine,
            sessions=create_sessionmaker(engine),
            outbox=Outbox(tables.outbox, producer=service),
        )
        app.state.runtime = rt
        try:
            rt.connection = await connect_broker(settings.amqp_url)
            rt.deps = await make_deps(rt) if make_deps else None
            if run_relay:
                rt.relay = OutboxRelay(
                    rt.sessions,
                    tables.outbox,
                    rt.connection,
                    topo,
                    service,
                    batch_size=settings.relay_batch_size,
                    listen_dsn=settings.sqlalchemy_url.replace("+asyncpg", ""),
                )
                rt.tasks.append(asyncio.create_task(rt.relay.run(), name=f"{service}-outbox-relay"))
            pruner = prune_forever(rt.sessions, tables.outbox, tables.inbox)
            rt.tasks.append(asyncio.create_task(pruner, name=f"{service}-bus-pruner"))
            for job in background:
                rt.tasks.append(asyncio.create_task(job(rt), name=f"{service}-{job.__name__}"))
            if subscriptions:
                rt.consumer = InboxConsumer(
                    service,
                    rt.sessions,
                    tables.inbox,
                    rt.outbox,
                    rt.connection,
                    topo,
                    subscriptions,
                    rt.deps,
                    prefetch=settings.consumer_prefetch,
                )
                await rt.consumer.start()
            log.info("service.started", host=settings.host, port=settings.port)
            yield
        finally:
            # Also runs when start-up failed half-way: close whatever was opened.
            if rt.consumer:
                await rt.consumer.stop()
            if rt.relay:
                rt.relay.stop()
            for task in rt.tasks:
                if task.get_name().endswith("-outbox-relay"):
                    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(task, timeout=5)
                else:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            closer = getattr(rt.deps, "aclose", None)
            if closer:
                await closer()
            if rt.connection is not None:
                await rt.connection.close()
            await engine.dispose()
            log.info("service.stopped")

    app = FastAPI(title=title or f"Siyu {service}", description=description, lifespan=lifespan)
    app.add_middleware(RequestContextMiddleware, service=service)

    @app.exception_handler(SiyuError)
    async def _siyu_error(request: Request, exc: SiyuError) -> JSONResponse:
        if exc.status >= 500:
            log.error("request.failed", error=exc.detail, status=exc.status)
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()[:20]
        ]
        return problem_response(_Invalid("the request does not match the schema", errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = _Generic(str(exc.detail), headers=dict(exc.headers or {}))
        err.status = exc.status_code  # type: ignore[misc]
        return problem_response(err, request)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.crashed", error=repr(exc))
        return problem_response(SiyuError("an unexpected error occurred; see the logs for this request id"), request)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/ready", include_in_schema=False)
    async def ready(request: Request) -> Response:
        rt = runtime_of(request)
        reasons: dict[str, str] = {}
        try:
            async with rt.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
        except Exception as exc:
            reasons["database"] = f"unreachable: {exc.__class__.__name__}"
        if rt.connection is None or rt.connection.is_closed:
            reasons["broker"] = "not connected"
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready", "service": service})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


class _Invalid(Unprocessable):
    """A request that does not match its schema (FastAPI's validation), with the field errors."""

    type_slug = "validation-error"
    title = "Request validation failed"


class _Generic(SiyuError):
    type_slug = "http-error"
    title = "HTTP error"
