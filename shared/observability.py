"""Structured JSON logs, request ids and W3C trace context, carried over HTTP and AMQP.

The ids live in context variables so a log line written anywhere inside a request or a consumed
event carries them without being passed around.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from contextvars import ContextVar
from dataclasses import dataclass

import structlog

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    @classmethod
    def parse(cls, header: str | None) -> TraceContext | None:
        if not header:
            return None
        m = _TRACEPARENT.match(header.strip().lower())
        if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
            return None
        return cls(m.group(1), m.group(2), m.group(3))

    @classmethod
    def new(cls) -> TraceContext:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        """Same trace, new span: what we send onward when we call or publish."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)


def continue_trace(header: str | None) -> TraceContext:
    """Continue the caller's trace when it sent a valid ``traceparent``, else start one."""
    parent = TraceContext.parse(header)
    ctx = parent.child() if parent else TraceContext.new()
    traceparent_var.set(ctx.traceparent)
    structlog.contextvars.bind_contextvars(trace_id=ctx.trace_id)
    return ctx


def outgoing_traceparent() -> str:
    """The ``traceparent`` to put on an outgoing call or message."""
    current = TraceContext.parse(traceparent_var.get())
    return (current.child() if current else TraceContext.new()).traceparent


def new_request_id() -> str:
    return secrets.token_hex(12)


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON lines on stdout, one per event, with service, request and event ids when bound."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper(), force=True)
    # httpx logs request URLs at INFO, and WeChat puts access tokens and secrets in query strings.
    for noisy in ("uvicorn.access", "aiormq", "aio_pika", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    shared_processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Route stdlib loggers (uvicorn, alembic, sqlalchemy) through the same JSON renderer.
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
    )
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(formatter)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
