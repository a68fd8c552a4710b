"""The bare endpoint: ``python -m bench.bare_app`` (``BARE_PORT``), the floor the push path is compared with.

One FastAPI route at the gateway's callback path that reads the body and answers ``success`` —
nothing else (no middleware, no database) — served exactly as ``shared.serve`` serves a service:
uvicorn, one worker, uvloop, httptools, no access log, ``log_config=None``.
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse


def create_app() -> FastAPI:
    app = FastAPI(title="bench bare endpoint")

    @app.post("/wechat/callbacks/{appid}")
    async def receive(appid: str, request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("success")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=int(os.environ.get("BARE_PORT", "19199")),
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
