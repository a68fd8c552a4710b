"""The outbox relay process: ``python -m services.relay [service ...]``.

One process moves every service's outbox to RabbitMQ (one :class:`shared.bus.relay.OutboxRelay` per
service database, each with a two-connection pool and its own LISTEN connection), so publishing
never competes with request handling for a service's event loop. Safe to run several: relays claim
rows with ``FOR UPDATE SKIP LOCKED``. ``make run`` and compose start one for all services; a
deployment may run one per service (``python -m services.relay identity``).

It serves ``/health``, ``/ready`` (every database and the broker reachable) and ``/metrics`` on
``RELAY_HOST:RELAY_PORT`` (127.0.0.1:8004).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.manifests import SERVICES, consumed_types
from shared.app import connect_broker
from shared.bus.relay import OutboxRelay
from shared.bus.topology import Topology
from shared.db import Database
from shared.errors import SiyuError
from shared.observability import configure_logging, get_logger
from shared.settings import SiyuSettings, load_settings, service_settings_class

log = get_logger(__name__)


class RelaySettings(SiyuSettings):
    relay_host: str = Field(default="127.0.0.1", validation_alias="RELAY_HOST")
    relay_port: int = Field(default=8004, validation_alias="RELAY_PORT")
    relay_batch_size: int = Field(default=500, validation_alias="RELAY_BATCH_SIZE", ge=1, le=5000)


def health_app(relays: list[OutboxRelay], dbs: list[Database], settings: RelaySettings) -> Starlette:
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "relay"})

    async def ready(request: Request) -> Response:
        reasons: dict[str, str] = {}
        for relay, db in zip(relays, dbs, strict=True):
            try:
                await db.ping()
            except Exception as exc:
                reasons[relay.producer] = f"database unreachable: {exc.__class__.__name__}"
            else:
                if relay.last_error is not None:
                    reasons[relay.producer] = f"relaying fails: {relay.last_error}"
        connection = request.app.state.connection
        if connection is None or not connection.connected.is_set():  # a robust one reconnecting is not "closed"
            reasons["broker"] = "not connected"
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready", "service": "relay", "relays": [r.producer for r in relays]})

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/health", health), Route("/ready", ready), Route("/metrics", metrics)])


async def run(services: list[str]) -> int:
    """Relay until SIGINT/SIGTERM (0) or until a relay or the HTTP server dies (1)."""
    settings = load_settings(RelaySettings)
    configure_logging("relay", settings.log_level)
    topology = Topology(namespace=settings.amqp_namespace)
    dbs = [
        Database(
            load_settings(service_settings_class(s, SERVICES[s])).database_dsn,
            producer=s,
            min_size=1,
            max_size=2,
            application_name=f"relay-{s}",
        )
        for s in services
    ]
    for db in dbs:
        await db.open()
    connection = await connect_broker(settings.amqp_url)
    types = consumed_types()
    relays = [
        OutboxRelay(db, connection, topology, s, consumed_types=types, batch_size=settings.relay_batch_size)
        for s, db in zip(services, dbs, strict=True)
    ]
    app = health_app(relays, dbs, settings)
    app.state.connection = connection
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.relay_host, port=settings.relay_port, log_config=None, access_log=False)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(r.run(), name=f"relay-{r.producer}") for r in relays]
    tasks.append(asyncio.create_task(server.serve(), name="relay-http"))
    log.info("relay.started", services=services, port=settings.relay_port)
    stopping = asyncio.create_task(stop.wait())
    died = False
    try:
        done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            # They run until stopped: one that ended on its own is a failure. (uvicorn also ends
            # its server on SIGTERM, so only while no stop was asked for.)
            if task in tasks and not stop.is_set():
                died = True
                error = task.exception() if not task.cancelled() else None
                log.error("relay.task_died", task=task.get_name(), error=repr(error))
    finally:
        stopping.cancel()
        for relay in relays:
            relay.stop()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
        await connection.close()
        for db in dbs:
            await db.close()
        log.info("relay.stopped")
    return 1 if died else 0


def main(argv: list[str]) -> int:
    services = argv or list(SERVICES)
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        print(f"siyu: unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(services))
    except SiyuError as exc:
        print(f"siyu: {exc.detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
