"""``python -m tools.wechat_sandbox``: serve the sandbox on SANDBOX_HOST:SANDBOX_PORT."""

from __future__ import annotations

import os
import sys

import uvicorn

from shared.errors import ConfigurationError
from shared.observability import configure_logging, get_logger
from shared.wechat.apps import load_apps
from tools.wechat_sandbox.app import create_app


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigurationError(f"{name}: {raw!r} is not an integer") from None


def main() -> None:
    configure_logging("wechat-sandbox", os.environ.get("SANDBOX_LOG_LEVEL", "INFO"))
    try:
        apps_file = os.environ.get("SIYU_WECHAT_APPS_FILE") or "deploy/dev/wechat-apps.yaml"
        apps = load_apps(apps_file)
        seed = _int_env("SANDBOX_SEED", 0)
        port = _int_env("SANDBOX_PORT", 8090)
    except ConfigurationError as exc:
        sys.exit(f"wechat-sandbox: {exc.detail}")
    gateway_url = os.environ.get("SIYU_GATEWAY_URL") or "http://127.0.0.1:8000"
    host = os.environ.get("SANDBOX_HOST") or "127.0.0.1"
    get_logger("wechat_sandbox").info(
        "sandbox_starting",
        apps=[a.appid for a in apps.apps],
        gateway_url=gateway_url,
        seed=seed,
        listen=f"{host}:{port}",
    )
    uvicorn.run(create_app(apps, gateway_url, seed), host=host, port=port, log_config=None)


if __name__ == "__main__":
    main()
