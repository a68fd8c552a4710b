"""Run a service under uvicorn: ``python -m services.<name>``."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from shared.settings import ServiceSettings, load_settings


def serve(settings_cls: type[ServiceSettings], create_app: Callable[[ServiceSettings], FastAPI]) -> None:
    settings = load_settings(settings_cls)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON logging, configured by the app factory
        access_log=False,  # the request middleware counts and times requests
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
