"""``make run``: set up, then run the four services, the outbox relay and the WeChat sandbox in the
foreground.

Behaves like ``docker compose up``: one process that owns its children (each logs JSON lines
naming its service), waits until every ``/ready`` answers, prints the URLs, and on Ctrl-C (or when
any child dies) stops them all. ``REPLICAS=2`` starts a second process of each service on its port
+ 10 (8010-8013) over the same databases and broker.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.manifests import CONSUMERS, SERVICES
from shared.bus import ops
from shared.db import migrate
from shared.settings import SiyuSettings, load_settings, service_settings_class

ROOT = Path(__file__).resolve().parent.parent
DEV_APPS_FILE = ROOT / "deploy" / "dev" / "wechat-apps.yaml"
SANDBOX_PORT = int(os.environ.get("SANDBOX_PORT", "8090"))
RELAY_PORT = int(os.environ.get("RELAY_PORT", "8004"))
REPLICA_PORT_OFFSET = 10


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SIYU_WECHAT_APPS_FILE", str(DEV_APPS_FILE))
    env.setdefault("SIYU_WECHAT_API_BASE", f"http://127.0.0.1:{SANDBOX_PORT}")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The operator API's bearer token: the one given, else a fresh development token printed at start.
    env.setdefault("SIYU_ADMIN_TOKEN", f"dev-admin-{secrets.token_urlsafe(18)}")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


async def setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    settings = load_settings(SiyuSettings)
    problems = await ops.check_infrastructure(settings.postgres_dsn, settings.amqp_url)
    if problems:
        for p in problems:
            print(f"siyu: {p}", file=sys.stderr)
        raise SystemExit(1)
    for service, port in SERVICES.items():
        await migrate(service, load_settings(service_settings_class(service, port)).sqlalchemy_url)
    await ops.declare_topology(settings.amqp_url, settings.amqp_namespace, CONSUMERS)
    print("siyu: databases migrated, broker topology declared", flush=True)


def start(name: str, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Each child gets its own process group so a Ctrl-C reaches it only through us, in order.
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", module], env=env, cwd=ROOT, start_new_session=True
    )


def replicas() -> int:
    raw = os.environ.get("REPLICAS", "1") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 2:
        raise SystemExit(f"siyu: REPLICAS must be 1 or 2 (got {raw!r})")
    return int(raw)


def wait_ready(urls: dict[str, str], procs: dict[str, subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            if procs[name].poll() is not None:
                raise SystemExit(
                    f"siyu: {name} exited with code {procs[name].returncode} during start; see its log above"
                )
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    if pending:
        raise SystemExit(f"siyu: not ready after {timeout:.0f}s: {', '.join(pending)}")


def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> int:
    env = _env()
    asyncio.run(setup(env))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        count = replicas()
        procs["sandbox"] = start("sandbox", "tools.wechat_sandbox", env)
        urls: dict[str, str] = {}
        for service, default_port in SERVICES.items():
            port = load_settings(service_settings_class(service, default_port)).port
            for replica in range(count):
                name = service if replica == 0 else f"{service}-{replica + 1}"
                replica_env = dict(env)
                replica_env[f"{service.upper()}_PORT"] = str(port + replica * REPLICA_PORT_OFFSET)
                procs[name] = start(name, f"services.{service}", replica_env)
                urls[name] = f"http://127.0.0.1:{port + replica * REPLICA_PORT_OFFSET}"
        procs["relay"] = start("relay", "services.relay", env)
        urls["relay"] = f"http://127.0.0.1:{RELAY_PORT}"
        urls["sandbox"] = f"http://127.0.0.1:{SANDBOX_PORT}"
        wait_ready({n: u + ("/ready" if n != "sandbox" else "/docs") for n, u in urls.items()}, procs)
        print("\nSiyu is running (Ctrl-C stops everything):", flush=True)
        for name, url in urls.items():
            docs = "" if name == "relay" else f"   docs: {url}/docs"
            print(f"  {name:<11} {url}{docs}", flush=True)
        print(f"  apps file   {env['SIYU_WECHAT_APPS_FILE']}", flush=True)
        print(f"  operator    Authorization: Bearer {env['SIYU_ADMIN_TOKEN']}   (SIYU_ADMIN_TOKEN)\n", flush=True)
        while not stopping:
            for name, p in procs.items():
                if p.poll() is not None:
                    print(f"siyu: {name} exited with code {p.returncode}; stopping the rest", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        print("\nsiyu: stopping...", flush=True)
        return 0
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        stop_all(procs)


if __name__ == "__main__":
    raise SystemExit(main())
