"""Real processes for the HTTP benchmarks: services under uvicorn, their own databases and broker
namespace, wrk as the load generator, and CPU / memory read from ``/proc``.

A benchmark builds a :class:`Stack`, creates and migrates its databases (``siyu_bench_<label>_<service>``,
with ``shared.db.migrate``), declares its broker namespace (``bench-<random>.``), starts each
process the way ``python -m services.<name>`` runs it (``shared.serve``: uvicorn, one worker,
uvloop, httptools) on a 19xxx port, and on the way out stops them, deletes the namespace's
queues and exchanges and drops the databases. Children get ``PR_SET_PDEATHSIG``: if the benchmark
process dies, they are sent SIGTERM too, so nothing is left running.

Load comes from ``wrk`` (one thread, N connections, a fixed duration) fed a file of
pre-built requests through ``bench/wrk_requests.lua``; its own CPU time is read with ``wait4`` so
a run can show that wrk was not the bottleneck. :class:`HttpCase` adds wrk runs to a
:class:`bench.harness.Case`: requests and wrk's measured duration, wrk's full latency histogram
(merged over rounds, so p99.9 is exact), and the CPU each process spent per request (the service
under test, PostgreSQL backends of this run's databases, RabbitMQ, wrk).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from bench import profile
from bench.harness import Case, mb, peak_rss_kb, reset_peak_rss, rss_kb
from services.manifests import CONSUMERS
from shared.bus import ops
from shared.bus.topology import Topology
from shared.db import migrate
from shared.settings import SiyuSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().with_name("wrk_requests.lua")
APPS_FILE = ROOT / "deploy" / "dev" / "wechat-apps.yaml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def wrk_path() -> str:
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError(
            "wrk is not installed: `apt-get install -y wrk` (as root, `make bench` installs it), then run again"
        )
    return found


# ---------------------------------------------------------------------------------------------
# /proc


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from ``/proc/<pid>/stat``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pids_named(*names: str) -> list[int]:
    """Pids whose ``comm`` is one of ``names`` (e.g. RabbitMQ's ``beam.smp``)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() in names:
                    out.append(int(entry))
        except OSError:
            continue
    return out


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
# processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    ready_url: str
    log: Path
    peak_rss_mb: float | None = None  # over its life, read just before it is stopped

    @property
    def pid(self) -> int:
        return self.popen.pid


class Stack:
    """Databases, broker namespace and processes of one benchmark run; ``async with`` cleans up."""

    def __init__(self, label: str) -> None:
        settings = load_settings(SiyuSettings)
        self.label = label
        self.pg = settings.postgres_dsn.rstrip("/")
        self.amqp = settings.amqp_url
        self.namespace = f"bench-{secrets.token_hex(3)}."
        self.databases: dict[str, str] = {}  # service -> plain postgresql:// URL
        self.procs: dict[str, Proc] = {}
        self.logdir = Path(tempfile.mkdtemp(prefix=f"siyu-bench-{label}-"))
        self.failed = False
        self._admin: asyncpg.Connection | None = None
        # run first on the way out (e.g. the benchmark's own pool on a database about to be dropped)
        self.closers: list[Callable[[], Awaitable[Any]]] = []

    def db_name(self, service: str) -> str:
        return f"siyu_bench_{self.label}_{service}"

    async def __aenter__(self) -> Stack:
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        self.failed = exc_type is not None
        await self.close()

    # --- databases and broker ------------------------------------------------------------------

    async def admin(self) -> asyncpg.Connection:
        if self._admin is None:
            self._admin = await asyncpg.connect(f"{self.pg}/postgres")
        return self._admin

    async def create_database(self, service: str) -> str:
        """Drop (a leftover of a crashed run), create and migrate ``siyu_bench_<label>_<service>``."""
        name = self.db_name(service)
        admin = await self.admin()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        url = f"{self.pg}/{name}"
        self.databases[service] = url
        await migrate(service, url.replace("postgresql://", "postgresql+asyncpg://", 1))
        return url

    async def declare_topology(self) -> None:
        """As ``make run`` does before any relay publishes: exchanges and every consumer's queues."""
        await ops.declare_topology(self.amqp, self.namespace, CONSUMERS)

    async def backend_pids(self) -> list[int]:
        """PostgreSQL backends connected to this run's databases."""
        admin = await self.admin()
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[])",
            [self.db_name(s) for s in self.databases],
        )
        return [r["pid"] for r in rows]

    # --- processes -----------------------------------------------------------------------------

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "SIYU_AMQP_NAMESPACE": self.namespace,
                "SIYU_WECHAT_APPS_FILE": os.environ.get("SIYU_WECHAT_APPS_FILE") or str(APPS_FILE),
                # The services' production default; every push and login logs one line (to a file here).
                "SIYU_LOG_LEVEL": "INFO",
            }
        )
        for service, url in self.databases.items():
            env[f"{service.upper()}_DATABASE_URL"] = url
        env.update(extra or {})
        return env

    def start(
        self,
        name: str,
        module: str,
        port: int,
        env: Mapping[str, str],
        ready_path: str = "/ready",
        args: Iterable[str] = (),
    ) -> Proc:
        log = self.logdir / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=dict(env),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        proc = Proc(name, popen, port, f"http://127.0.0.1:{port}{ready_path}", log)
        self.procs[name] = proc
        profile.follow(name, popen.pid)  # --profile: record this process too
        return proc

    async def wait_ready(self, within_s: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + within_s
        pending = dict(self.procs)
        async with httpx.AsyncClient(timeout=1) as client:
            while pending:
                for name, proc in list(pending.items()):
                    if proc.popen.poll() is not None:
                        raise RuntimeError(f"{name} exited during start:\n{proc.log.read_text()[-3000:]}")
                    try:
                        if (await client.get(proc.ready_url)).status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"not ready after {within_s:.0f}s: {', '.join(pending)}")
                await asyncio.sleep(0.2)
        # pids printed so a profiler can be attached (uv run --with py-spy py-spy record -p PID ...)
        started = ", ".join(f"{n} pid {p.pid} :{p.port}" for n, p in self.procs.items())
        print(f"  started {started}; logs in {self.logdir}", flush=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.procs[name].port}"

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{name} died (exit {proc.popen.returncode}):\n{proc.log.read_text()[-3000:]}")

    def peak_rss(self) -> dict[str, float | None]:
        """Peak RSS (MB) over each process's life so far (``VmHWM``, never reset by this module)."""
        out = {}
        for name, proc in self.procs.items():
            now = mb(peak_rss_kb(proc.pid))
            proc.peak_rss_mb = max(proc.peak_rss_mb or 0.0, now or 0.0) or None
            out[name] = proc.peak_rss_mb
        return out

    def stop(self) -> None:
        self.peak_rss()
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs.values():
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=5)

    async def close(self) -> None:
        errors = []
        for closer in self.closers:
            try:
                await closer()
            except Exception as exc:
                errors.append(f"closing: {exc!r}")
        self.stop()
        try:
            connection = await aio_pika.connect(self.amqp, timeout=5)
            async with connection:
                channel = await connection.channel()
                await Topology(namespace=self.namespace).delete_all(channel, list(CONSUMERS))
        except Exception as exc:
            errors.append(f"broker clean-up: {exc!r}")
        try:
            admin = await self.admin()
            for service in self.databases:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name(service)}" WITH (FORCE)')
            await admin.close()
        except Exception as exc:
            errors.append(f"database clean-up: {exc!r}")
        if self.failed or errors:
            print(f"!! process logs kept in {self.logdir}", flush=True)
        else:
            shutil.rmtree(self.logdir, ignore_errors=True)
        for e in errors:
            print(f"!! {e}", flush=True)


# ---------------------------------------------------------------------------------------------
# CPU accounting


@dataclass
class CpuSnapshot:
    procs: dict[str, float | None]
    backends: dict[int, float]
    broker: float


class CpuMeter:
    """CPU seconds of the stack's processes, of the PostgreSQL backends serving this run's
    databases (by pid, from ``pg_stat_activity``) and of RabbitMQ (the whole broker: shared with
    anything else using it)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.broker_pids = pids_named("beam.smp")

    async def snapshot(self) -> CpuSnapshot:
        backends = {}
        for pid in await self.stack.backend_pids():
            cpu = cpu_seconds(pid)
            if cpu is not None:
                backends[pid] = cpu
        broker = sum(cpu_seconds(pid) or 0.0 for pid in self.broker_pids)
        return CpuSnapshot({n: cpu_seconds(p.pid) for n, p in self.stack.procs.items()}, backends, broker)

    @staticmethod
    def delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        out = {}
        for name, end in after.procs.items():
            start = before.procs.get(name)
            if end is not None and start is not None:
                out[name] = end - start
        # A backend that appeared meanwhile counts whole; one that went away is lost (rare: pools keep theirs).
        out["postgres"] = sum(cpu - before.backends.get(pid, 0.0) for pid, cpu in after.backends.items())
        out["rabbitmq"] = after.broker - before.broker
        return out


# ---------------------------------------------------------------------------------------------
# wrk


def _field(value: str, what: str) -> str:
    if "\t" in value or "\n" in value or "\r" in value or "\x1f" in value:
        raise ValueError(f"a request's {what} cannot hold a tab, newline or \\x1f: {value[:80]!r}")
    return value


def write_requests(path: Path, requests: Iterable[tuple[str, str, Mapping[str, str], str]]) -> int:
    """Write ``(method, path, headers, body)`` rows in the format ``wrk_requests.lua`` reads."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for method, target, headers, body in requests:
            h = "\x1f".join(f"{_field(k, 'header')}: {_field(v, 'header')}" for k, v in headers.items())
            f.write(f"{_field(method, 'method')}\t{_field(target, 'path')}\t{h}\t{_field(body, 'body')}\n")
            n += 1
    return n


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    wrapped: int  # times the request list was started over (0: every request sent was distinct)
    pool: int  # requests in the file
    slots: int
    late: int  # constant-rate runs: requests sent more than 1 ms after their slot
    late_max_ms: float
    hist: Counter[int]  # latency in microseconds -> count
    cpu_seconds: float  # wrk's own CPU time (wait4)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _run_wrk_blocking(argv: list[str], env: dict[str, str]) -> tuple[str, int, float]:
    popen = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert popen.stdout is not None
    out = popen.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(popen.pid, 0)
    popen.returncode = os.waitstatus_to_exitcode(status)
    return out, popen.returncode, usage.ru_utime + usage.ru_stime


async def run_wrk(
    url: str,
    requests_file: Path,
    *,
    connections: int,
    seconds: float,
    rate: float = 0.0,
    timeout_s: int = 10,
) -> WrkResult:
    """One wrk run: one thread, ``connections`` connections, ``seconds`` long; ``rate`` > 0 for a
    constant request rate (delay() in the Lua script), 0 for a closed loop (as fast as answered)."""
    duration_ms = max(1000, round(seconds * 1000))
    argv = [
        wrk_path(),
        "-t1",
        f"-c{connections}",
        f"-d{duration_ms // 1000}s" if duration_ms % 1000 == 0 else f"-d{duration_ms}ms",
        f"--timeout={timeout_s}s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(requests_file),
    ]
    env = dict(os.environ, WRK_RATE=f"{rate:.3f}" if rate > 0 else "0")
    out, code, cpu = await asyncio.to_thread(_run_wrk_blocking, argv, env)
    summary: dict[str, Any] | None = None
    hist: Counter[int] = Counter()
    for line in out.splitlines():
        if line.startswith("BENCH "):
            summary = json.loads(line[len("BENCH ") :])
        elif line.startswith("BENCH_HIST"):
            for pair in line.split()[1:]:
                us, count = pair.split(":")
                hist[int(us)] += int(count)
    if code != 0 or summary is None:
        raise RuntimeError(f"wrk failed (exit {code}):\n{out[-3000:]}")
    return WrkResult(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        errors={k: summary[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")},
        wrapped=summary["wrapped"],
        pool=summary["pool"],
        slots=summary["slots"],
        late=summary["late"],
        late_max_ms=summary["late_max_ms"],
        hist=hist,
        cpu_seconds=cpu,
    )


PERCENTILES = {"p50_ms": 500, "p90_ms": 900, "p99_ms": 990, "p999_ms": 999}


def hist_summary(hist: Counter[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in ms of a microsecond histogram (nearest rank, exact)."""
    total = sum(hist.values())
    if not total:
        return {}
    # the nearest rank of each percentile: ceil(total x q), in integers (per mille)
    ranks = {key: max(1, -(-total * permille // 1000)) for key, permille in PERCENTILES.items()}
    out: dict[str, float] = {}
    seen = 0
    values = sorted(hist)
    for us in values:
        seen += hist[us]
        for key, rank in ranks.items():
            if key not in out and seen >= rank:
                out[key] = round(us / 1000, 3)
    mean = sum(us * c for us, c in hist.items()) / total
    return {
        "p50_ms": out["p50_ms"],
        "p90_ms": out["p90_ms"],
        "p99_ms": out["p99_ms"],
        "p999_ms": out["p999_ms"],
        "max_ms": round(values[-1] / 1000, 3),
        "mean_ms": round(mean / 1000, 3),
        "samples": total,
    }


@dataclass
class HttpCase:
    """A :class:`Case` measured with wrk against ``server`` (a process of the stack)."""

    case: Case
    server: str
    hist: Counter[int] = field(default_factory=Counter)
    cpu: Counter[str] = field(default_factory=Counter)  # process -> CPU seconds over the timed runs
    wrk_cpu: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    runs: list[dict[str, Any]] = field(default_factory=list)

    async def measure(
        self,
        stack: Stack,
        meter: CpuMeter,
        target: str,
        requests_file: Path,
        *,
        connections: int,
        seconds: float,
        rate: float = 0.0,
        distinct: bool = False,
    ) -> WrkResult:
        """One timed wrk run (a round) added to the case; ``distinct``: fail if a request was re-sent."""
        server = stack.procs[self.server]
        stack.peak_rss()  # keep each process's peak over its life before resetting the server's
        tracking = reset_peak_rss(server.pid)
        if self.case.rss_start_mb is None:
            self.case.rss_start_mb = mb(rss_kb(server.pid))
        before = await meter.snapshot()
        result = await run_wrk(target, requests_file, connections=connections, seconds=seconds, rate=rate)
        after = await meter.snapshot()
        stack.check_alive()
        peak = mb(peak_rss_kb(server.pid)) if tracking else None
        stack.peak_rss()
        if peak is None:
            peak = server.peak_rss_mb
        c = self.case
        c.n += result.requests
        c.seconds += result.seconds
        c.segments += 1
        c.max_load1 = max(c.max_load1, os.getloadavg()[0])
        c.peak_rss_mb = max(c.peak_rss_mb or 0.0, peak or 0.0)
        c.rss_of = self.server
        c.cpu_of = self.server
        spent = CpuMeter.delta(before, after)
        c.cpu_seconds += spent.get(self.server, 0.0)
        self.cpu.update(spent)
        self.wrk_cpu += result.cpu_seconds
        self.hist.update(result.hist)
        self.errors.update({k: v for k, v in result.errors.items() if v})
        self.runs.append(
            {
                "requests": result.requests,
                "seconds": round(result.seconds, 3),
                "rate": round(result.rate, 1),
                "connections": connections,
                **({"target_rate": round(rate, 1), "late_over_1ms": result.late} if rate else {}),
                **({"late_max_ms": round(result.late_max_ms, 1)} if rate else {}),
            }
        )
        if distinct and result.wrapped:
            raise AssertionError(
                f"{c.name}: wrk re-sent requests ({result.requests} answered, {result.pool} in the file): "
                "the pool of distinct requests was too small"
            )
        if result.error_count:
            raise AssertionError(f"{c.name}: wrk saw errors {result.errors} (non-2xx/3xx answers or socket errors)")
        return result

    def finish(self) -> Case:
        """Write the merged latency, CPU split and wrk's own load into the case; returns it."""
        c = self.case
        c.latency_summary = hist_summary(self.hist)
        wall = c.seconds or 1.0
        c.extra["cpu_us_per_request"] = {k: round(v / c.n * 1e6) for k, v in sorted(self.cpu.items())} if c.n else {}
        c.extra["cpu_cores_busy"] = {k: round(v / wall, 2) for k, v in sorted(self.cpu.items())}
        c.extra["wrk_cpu_cores_busy"] = round(self.wrk_cpu / wall, 2)
        c.extra["wrk_cpu_us_per_request"] = round(self.wrk_cpu / c.n * 1e6, 1) if c.n else None
        c.extra["runs"] = self.runs
        return c
