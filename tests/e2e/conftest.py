"""The whole stack as real processes: the services, the relay and the WeChat sandbox.

They use this worker's test databases and a broker namespace of their own (tests/conftest.py), and
listen on free ports picked at start, so neither a `make run` nor another test run on the same
machine is disturbed.

Under pytest-xdist all of them go to one worker as one unit (``pytest_xdist_make_scheduler`` in
tests/conftest.py), which runs them back to back against one stack. The alternative, one stack
shared by all workers, would need shared databases and cross-process start and stop, and save
little: the stack starts once per run either way.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.manifests import CONSUMERS
from shared.bus import ops
from shared.settings import DEV_INTERNAL_TOKEN
from tests.conftest import AMQP, NAMESPACE, delete_namespace
from tests.waiting import eventually

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OA = "wx0000000000000001"  # the sample apps file's service account
E2E_NAMESPACE = f"{NAMESPACE}e2e."


@dataclass(frozen=True)
class Process:
    module: str  # run as ``python -m <module>``
    port_variable: str  # the environment variable it takes its port from
    ready_path: str = "/ready"  # answers 200 once it can serve


# Every process the stack runs, in start order. Adding one (a worker, a scheduler) is one line here;
# wire what it needs to find the others in ``_environment``.
PROCESSES: dict[str, Process] = {
    "sandbox": Process("tools.wechat_sandbox", "SANDBOX_PORT", "/health"),
    "relay": Process("services.relay", "RELAY_PORT"),
    "gateway": Process("services.gateway", "GATEWAY_PORT"),
    "identity": Process("services.identity", "IDENTITY_PORT"),
    "commerce": Process("services.commerce", "COMMERCE_PORT"),
    "notify": Process("services.notify", "NOTIFY_PORT"),
}


def _environment(urls: dict[str, str], ports: dict[str, int]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SIYU_WECHAT_API_BASE": urls["sandbox"],
            "SIYU_GATEWAY_URL": urls["gateway"],
            "GATEWAY_IDENTITY_URL": urls["identity"],
            "GATEWAY_COMMERCE_URL": urls["commerce"],
            "GATEWAY_NOTIFY_URL": urls["notify"],
            "NOTIFY_COMMERCE_URL": urls["commerce"],
            # commerce resolves buyers through identity, notify reads audiences from it: this stack's.
            "COMMERCE_IDENTITY_URL": urls["identity"],
            "NOTIFY_IDENTITY_URL": urls["identity"],
            "SIYU_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
            # Its own broker namespace: the integration tests' in-process consumers never share
            # queues with these processes.
            "SIYU_AMQP_NAMESPACE": E2E_NAMESPACE,
            "SIYU_RELAY_IN_PROCESS": "false",
        }
    )
    env.update({PROCESSES[name].port_variable: str(port) for name, port in ports.items()})
    return env


def _free_ports(names: list[str]) -> dict[str, int]:
    """Ports nothing listens on now (all held at once, so they differ), for the processes to take."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in names]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return {name: s.getsockname()[1] for name, s in zip(names, sockets, strict=True)}
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, the processes get SIGTERM if this test worker dies, instead of living on."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_parent_death_signal() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_parent_death_signal


@dataclass
class Stack:
    urls: dict[str, str]
    logs: Path
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, name: str, *, internal: bool = False) -> httpx.AsyncClient:
        """An async client for one process (closed after the test)."""
        headers = {"X-Siyu-Internal-Token": DEV_INTERNAL_TOKEN} if internal else {}
        client = httpx.AsyncClient(base_url=self.urls[name], headers=headers, timeout=10)
        self._clients.append(client)
        return client

    async def close_clients(self) -> None:
        while self._clients:
            await self._clients.pop().aclose()


def _start(name: str, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"{name}.log", "wb") as out:
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", PROCESSES[name].module],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(),  # only prctl, before exec
        )


async def _wait_ready(stack: Stack, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    pending = set(procs)
    async with httpx.AsyncClient(timeout=2) as http:

        async def all_ready() -> bool:
            for name in sorted(pending):
                if procs[name].poll() is not None:
                    log = (stack.logs / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} exited during start (code {procs[name].returncode}):\n{log}")
                try:
                    if (await http.get(stack.urls[name] + PROCESSES[name].ready_path)).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            return not pending

        try:
            # Six interpreters importing the services: slow on a busy 2-core machine, hence generous.
            await eventually(all_ready, within=180, interval=0.2, what="every stack process to be ready")
        except AssertionError:
            tails = "\n".join(f"--- {n}.log\n{(stack.logs / f'{n}.log').read_text()[-1500:]}" for n in sorted(pending))
            raise AssertionError(f"not ready after 180 s: {', '.join(sorted(pending))}\n{tails}") from None


async def _wait_reply_rules(stack: Stack) -> None:
    """notify publishes its reply rules at start; the gateway answers from them once its copy has
    them. Until then a follow is only acknowledged: wait, so no test races the first publication."""
    async with httpx.AsyncClient(base_url=stack.urls["sandbox"], timeout=5) as sandbox:
        user = (await sandbox.post("/sandbox/users", json={"nickname": "warm-up"})).json()
        await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", json={"appid": OA})

        async def answered() -> bool:
            body = {"appid": OA, "text": "help"}
            answer = (await sandbox.post(f"/sandbox/users/{user['user_id']}/messages", json=body)).json()
            return answer.get("body") not in (None, "success")

        await eventually(answered, within=60, what="the gateway to hold notify's reply rules")


async def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            await asyncio.to_thread(p.wait, 10)
        except subprocess.TimeoutExpired:
            p.kill()
            await asyncio.to_thread(p.wait)


@pytest.fixture(scope="package")
async def stack(databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    logs = tmp_path_factory.mktemp("stack-logs")
    ports = _free_ports(list(PROCESSES))
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = _environment(urls, ports)
    # As `make run` does: the topology exists before any relay publishes.
    await ops.declare_topology(AMQP, E2E_NAMESPACE, CONSUMERS)
    stack = Stack(urls=urls, logs=logs)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in PROCESSES:
            procs[name] = _start(name, env, logs)
        await _wait_ready(stack, procs)
        await _wait_reply_rules(stack)
        yield stack
    finally:
        await _stop(procs)
        await delete_namespace(E2E_NAMESPACE)


@pytest.fixture(autouse=True)
async def _close_stack_clients(stack: Stack) -> AsyncIterator[None]:
    yield
    await stack.close_clients()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is e2e (``-m "not e2e"`` leaves the stack alone), and the first one's set-up
    starts the stack: pytest-timeout counts set-up, so the limit covers the stack's 180 s."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(240))
