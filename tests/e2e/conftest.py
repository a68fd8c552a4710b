"""The whole stack as real processes: four services and the WeChat sandbox, on test ports.

They use this run's test databases and broker namespace (tests/conftest.py), so a `make run` on
the same machine is not disturbed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.settings import DEV_INTERNAL_TOKEN
from tests.conftest import NAMESPACE, delete_namespace

ROOT = Path(__file__).resolve().parents[2]
E2E_NAMESPACE = f"{NAMESPACE}e2e."
PORTS = {"gateway": 18000, "identity": 18001, "commerce": 18002, "notify": 18003, "relay": 18004, "sandbox": 18090}


@dataclass
class Stack:
    urls: dict[str, str]
    logs: Path

    def client(self, name: str, *, internal: bool = False) -> httpx.Client:
        headers = {"X-Siyu-Internal-Token": DEV_INTERNAL_TOKEN} if internal else {}
        return httpx.Client(base_url=self.urls[name], headers=headers, timeout=10)


def _wait_ready(urls: dict[str, str], procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + 60
    pending = dict(urls)
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            if procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited during start:\n{(logs / f'{name}.log').read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    if pending:
        raise RuntimeError(f"not ready: {pending}")


@pytest.fixture(scope="package")
def stack(databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack-logs")
    env = dict(os.environ)
    env.update(
        {
            "SIYU_WECHAT_API_BASE": f"http://127.0.0.1:{PORTS['sandbox']}",
            "SIYU_GATEWAY_URL": f"http://127.0.0.1:{PORTS['gateway']}",
            "SANDBOX_PORT": str(PORTS["sandbox"]),
            "SIYU_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
            # Its own broker namespace: the integration tests' in-process consumers never share
            # queues with these processes.
            "SIYU_AMQP_NAMESPACE": E2E_NAMESPACE,
            "SIYU_RELAY_IN_PROCESS": "false",
            "RELAY_PORT": str(PORTS["relay"]),
        }
    )
    for service in ("gateway", "identity", "commerce", "notify"):
        env[f"{service.upper()}_PORT"] = str(PORTS[service])
    for service in ("identity", "commerce", "notify"):
        env[f"GATEWAY_{service.upper()}_URL"] = f"http://127.0.0.1:{PORTS[service]}"
    env["NOTIFY_COMMERCE_URL"] = f"http://127.0.0.1:{PORTS['commerce']}"
    # commerce resolves buyers through identity, notify reads audiences from it: this stack's identity.
    env["COMMERCE_IDENTITY_URL"] = env["NOTIFY_IDENTITY_URL"] = f"http://127.0.0.1:{PORTS['identity']}"
    modules = {"sandbox": "tools.wechat_sandbox", "relay": "services.relay"} | {
        s: f"services.{s}" for s in ("gateway", "identity", "commerce", "notify")
    }
    # As `make run` does: the topology exists before any relay publishes.
    subprocess.run([sys.executable, "-m", "tools.siyuctl", "topology"], env=env, cwd=ROOT, check=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, module in modules.items():
            with open(logs / f"{name}.log", "wb") as out:
                procs[name] = subprocess.Popen(  # noqa: S603
                    [sys.executable, "-m", module], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
                )
        urls = {n: f"http://127.0.0.1:{p}" for n, p in PORTS.items()}
        _wait_ready({n: u + ("/health" if n == "sandbox" else "/ready") for n, u in urls.items()}, procs, logs)
        yield Stack(urls=urls, logs=logs)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        asyncio.run(delete_namespace(E2E_NAMESPACE))


def eventually(check, timeout: float = 15.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it returns something truthy; the last value or an AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


async def eventually_async(check, timeout: float = 15.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """``eventually`` for an async ``check``."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
