"""Run a service under uvicorn: ``python -m services.<name>``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from shared.errors import ConfigurationError
from shared.http import SERVER_KEEPALIVE
from shared.settings import ServiceSettings, load_settings

S = TypeVar("S", bound=ServiceSettings)


def serve(settings_cls: type[S], create_app: Callable[[S], FastAPI]) -> None:
    settings = load_settings(settings_cls)
    try:
        app = create_app(settings)
    except ConfigurationError as exc:
        print(f"siyu: {exc.detail}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON logging, configured by the app factory
        access_log=False,  # the request middleware counts and times requests
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
        # Longer than every client's idle keep-alive (shared.http.KEEPALIVE_EXPIRY): the client
        # always gives up an idle connection first, so it never reuses one this server is closing.
        timeout_keep_alive=SERVER_KEEPALIVE,
    )
