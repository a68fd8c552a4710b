"""The app factory every service uses: lifespan, health, metrics, problems, request ids, tracing.

A service's ``app.py`` is short: its settings, ``create_service_app(...)`` with its tables,
routers and subscription manifest, and nothing cross-cutting of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.bus.consumer import Handler, InboxConsumer
from shared.bus.relay import OutboxRelay
from shared.bus.retention import prune_forever
from shared.bus.topology import Topology
from shared.db import Database
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


D = TypeVar("D")
S = TypeVar("S", bound=ServiceSettings)


@dataclass
class Runtime(Generic[S]):
    """What a service has at start, before its own dependencies: settings, database, broker."""

    settings: S
    topology: Topology
    db: Database
    connection: AbstractRobustConnection


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


async def get_deps(request: Request) -> Any:
    """The service's dependencies (what its ``make_deps`` built at start).

    Each service types it once: ``Deps = Annotated[IdentityDeps, Depends(get_deps)]``. ``async``:
    FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop on every request.
    """
    return request.app.state.deps


async def require_internal(request: Request) -> None:
    """Internal endpoints: only Siyu's own services, with the internal credential."""
    given = request.headers.get(INTERNAL_TOKEN_HEADER, "")
    expected = request.app.state.settings.internal_token_value
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("this endpoint is internal: a valid X-Siyu-Internal-Token is required")


InternalOnly = Depends(require_internal)

def create_service_app(
    settings: S,
    *,
    make_deps: Callable[[Runtime[S]], Awaitable[D]],
    routers: Iterable[APIRouter] = (),
    subscriptions: Mapping[str, Handler] | None = None,
    topology: Topology | None = None,
    background: Sequence[Callable[[D], Coroutine[Any, Any, None]]] = (),
    consumed_types: Collection[str] = (),
    readiness: Callable[[D], Mapping[str, str]] | None = None,
    title: str | None = None,
    description: str = "",
) -> FastAPI:
    """A service: ``make_deps`` builds its typed dependencies once at start (they hold the database);
    ``subscriptions`` is its consumer manifest; ``background`` are its periodic jobs.

    The outbox relay runs in its own process (``services/relay.py``); with
    ``SIYU_RELAY_IN_PROCESS=true`` (tests, a one-process deployment) the service runs one for its
    own database, treating ``consumed_types`` as the types some service consumes.
    ``readiness(deps)`` names what else keeps the service from being ready (``/ready`` answers 503).
    """
    service = settings.service_name
    configure_logging(service, settings.log_level)
    topo = topology or Topology(namespace=settings.amqp_namespace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_dsn, producer=service, max_size=settings.db_pool_size, application_name=service)
        tasks: list[asyncio.Task[Any]] = []
        consumer: InboxConsumer[D] | None = None
        relay: OutboxRelay | None = None
        deps: D | None = None
        connection: AbstractRobustConnection | None = None
        app.state.consumer = None
        try:
            await db.open()
            connection = await connect_broker(settings.amqp_url)
            app.state.connection = connection
            deps = await make_deps(Runtime(settings, topo, db, connection))
            app.state.deps = deps
            if settings.relay_in_process:
                relay = OutboxRelay(
                    db, connection, topo, service, consumed_types=consumed_types, batch_size=settings.relay_batch_size
                )
                tasks.append(asyncio.create_task(relay.run(), name=f"{service}-outbox-relay"))
            tasks.append(asyncio.create_task(prune_forever(db), name=f"{service}-bus-pruner"))
            for job in background:
                tasks.append(asyncio.create_task(job(deps), name=f"{service}-{job.__name__}"))
            if subscriptions:
                consumer = InboxConsumer(
                    service, db, connection, topo, subscriptions, deps, prefetch=settings.consumer_prefetch
                )
                app.state.consumer = consumer
                await consumer.start()
            log.info("service.started", host=settings.host, port=settings.port)
            yield
        finally:
            # Also runs when start-up failed half-way: close whatever was opened.
            if consumer:
                await consumer.stop()
            if relay:
                relay.stop()
            for task in tasks:
                if relay is not None and task.get_name().endswith("-outbox-relay"):
                    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(task, timeout=5)
                else:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            closer = getattr(deps, "aclose", None)
            if closer:
                await closer()
            if connection is not None:
                await connection.close()
            await db.close()
            log.info("service.stopped")

    app = FastAPI(title=title or f"Siyu {service}", description=description, lifespan=lifespan)
    app.state.settings = settings
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
        reasons: dict[str, str] = {}
        try:
            await request.app.state.deps.db.ping()
        except Exception as exc:
            reasons["database"] = f"unreachable: {exc.__class__.__name__}"
        connection = getattr(request.app.state, "connection", None)
        if connection is None or not connection.connected.is_set():  # a robust one reconnecting is not "closed"
            reasons["broker"] = "not connected"
        consumer = getattr(request.app.state, "consumer", None)
        if consumer is not None and consumer.status:
            reasons["consumer"] = consumer.status
        if readiness is not None:
            reasons.update(readiness(request.app.state.deps))
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
