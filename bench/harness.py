"""Measuring tools shared by every benchmark: timing, percentiles, peak memory, machine facts.

A benchmark is an ``async def`` taking a :class:`Run` and registered with :func:`bench.register`.
It creates cases with :meth:`Run.new_case`, times them with ``with case.timed():`` (one or more
segments), records them with :meth:`Run.record`, and names, for each measured case, the baseline
cases of the same run it is compared with; ratios are computed here, never across runs or machines.

Memory: Linux keeps a process's peak RSS (``VmHWM``); writing ``5`` to ``/proc/self/clear_refs``
resets it to the current RSS, so each case reports the peak reached while it ran. The whole run's
peak comes from ``getrusage`` (it never resets). A child process a benchmark starts is measured
with :func:`peak_rss_kb` (``/proc/<pid>/status``) before it exits; ``RUSAGE_CHILDREN`` is no help
here, as a forked child inherits its parent's high-water mark.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RSS_BUDGET_MB = 300  # a service process should stay under this at benchmark load (project rule)


# ---------------------------------------------------------------------------------------------
# statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize_latencies(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in milliseconds of a list of durations in seconds."""
    if not seconds:
        return {}
    s = sorted(seconds)
    return {
        "p50_ms": round(percentile(s, 50) * 1000, 3),
        "p90_ms": round(percentile(s, 90) * 1000, 3),
        "p99_ms": round(percentile(s, 99) * 1000, 3),
        "p999_ms": round(percentile(s, 99.9) * 1000, 3),
        "max_ms": round(s[-1] * 1000, 3),
        "samples": len(s),
    }


class Latencies:
    """Collects durations: ``with lat.timing(): ...`` or ``lat.add(seconds)``."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    @contextmanager
    def timing(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.values.append(time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# memory


def _status_kb(pid: int | str, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kb(pid: int | str = "self") -> int | None:
    """Current resident set size of a process (kB), from ``/proc/<pid>/status``."""
    return _status_kb(pid, "VmRSS")


def peak_rss_kb(pid: int | str = "self") -> int | None:
    """Peak resident set size (``VmHWM``, kB) of a live process: this one or a child."""
    return _status_kb(pid, "VmHWM")


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0). False when the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def process_peak_rss_kb() -> int:
    """This process's peak RSS over its whole life (``getrusage``; kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


# ---------------------------------------------------------------------------------------------
# machine


def _package_versions(names: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _mem_total_mb() -> float | None:
    return mb(_status_file_kb("/proc/meminfo", "MemTotal"))


def _status_file_kb(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict[str, Any]:
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    status = _git("status", "--porcelain")
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "mem_total_mb": _mem_total_mb(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": _package_versions(["aio-pika", "aiormq", "asyncpg", "sqlalchemy", "pydantic", "uvloop"]),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


# ---------------------------------------------------------------------------------------------
# a run and its cases


@dataclass
class Case:
    """One measured thing: ``n`` operations in ``seconds``, optionally compared with baselines.

    A case may be timed in several segments (``with case.timed(): ...``), e.g. one per round when
    baseline and measured cases alternate to spread drifting machine load over both; the
    segments' operations and times add up.
    """

    name: str
    group: str
    unit: str
    n: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    segments: int = 0
    baseline: bool = False
    compare_to: tuple[str, ...] = ()
    latencies: Latencies = field(default_factory=Latencies)
    latency_of: str | None = None  # what one latency sample is ("publish", "transaction", "batch of 200")
    rss_start_mb: float | None = None
    peak_rss_mb: float | None = None
    max_load1: float = 0.0
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    timed_from: float | None = None  # set inside a segment to time it from this perf_counter() instead
    # Cases whose work happens in another process (the HTTP benchmarks: a service under wrk) fill
    # these instead: the latency summary measured elsewhere (wrk's histogram), and whose CPU time
    # ``cpu_seconds`` and whose peak RSS ``peak_rss_mb`` are (None = this benchmark process).
    latency_summary: dict[str, float] | None = None
    cpu_of: str | None = None
    rss_of: str | None = None

    @contextmanager
    def timed(self) -> Iterator[Case]:
        """Time one segment of this case. Only the body counts: keep set-up and checks outside."""
        tracking = reset_peak_rss()
        if self.rss_start_mb is None:
            self.rss_start_mb = mb(rss_kb())
        self.timed_from = None
        cpu0 = time.process_time()
        started = time.perf_counter()
        yield self
        ended = time.perf_counter()
        self.cpu_seconds += time.process_time() - cpu0
        self.seconds += ended - (self.timed_from if self.timed_from is not None else started)
        self.segments += 1
        peak = mb(peak_rss_kb() if tracking else process_peak_rss_kb())
        self.peak_rss_mb = max(self.peak_rss_mb or 0.0, peak or 0.0)
        self.max_load1 = max(self.max_load1, os.getloadavg()[0])

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu_seconds / self.n * 1e6 if self.n else math.nan

    def as_dict(self, ratios: dict[str, float]) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "group": self.group,
            "kind": "baseline" if self.baseline else "measured",
            "n": self.n,
            "seconds": round(self.seconds, 4),
            "segments": self.segments,
            "rate_per_s": round(self.rate, 1),
            "unit": self.unit,
            "cpu_us_per_op": round(self.cpu_us_per_op, 1),
            "rss_start_mb": self.rss_start_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "max_load1": round(self.max_load1, 2),
        }
        if self.cpu_of:
            d["cpu_of"] = self.cpu_of
        if self.rss_of:
            d["rss_of"] = self.rss_of
        if ratios:
            d["ratio_vs"] = ratios
        if self.latency_summary:
            d["latency"] = {"of": self.latency_of, **self.latency_summary}
        elif self.latencies.values:
            d["latency"] = {"of": self.latency_of, **summarize_latencies(self.latencies.values)}
        if self.notes:
            d["notes"] = self.notes
        if self.extra:
            d["extra"] = self.extra
        return d


class Run:
    """What a benchmark gets: its size, its cases and free-form facts about the environment."""

    def __init__(self, name: str, *, quick: bool, n: int) -> None:
        self.name = name
        self.quick = quick
        self.n = n
        self.cases: list[Case] = []
        self.facts: dict[str, Any] = {}
        # Peak RSS (MB) over the run of each process a benchmark started (services under test):
        # read with ``peak_rss_kb(pid)`` before the process exits.
        self.process_peak_rss_mb: dict[str, float | None] = {}

    def new_case(
        self,
        name: str,
        *,
        group: str,
        unit: str = "msg/s",
        baseline: bool = False,
        compare_to: Sequence[str] = (),
        latency_of: str | None = None,
        notes: str = "",
    ) -> Case:
        """A case to time in one or more segments, then :meth:`record`. Names in ``compare_to``
        must be cases of this run."""
        return Case(
            name,
            group,
            unit,
            baseline=baseline,
            compare_to=tuple(compare_to),
            latency_of=latency_of,
            notes=notes,
        )

    def record(self, c: Case) -> None:
        self.cases.append(c)
        ratio_text = "  ".join(f"{r:.2f}x {b}" for b, r in self.ratios(c).items())
        print(
            f"  {c.name:<50} {c.n:>6} in {c.seconds:6.2f}s {c.rate:>7.0f} {c.unit:<8} "
            f"cpu {c.cpu_us_per_op:>5.0f}us/op{f' ({c.cpu_of})' if c.cpu_of else ''}  "
            f"peak {c.peak_rss_mb} MB{f' ({c.rss_of})' if c.rss_of else ''}  load {c.max_load1:.1f}  {ratio_text}",
            flush=True,
        )

    def get(self, name: str) -> Case:
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(f"no case {name!r} measured in this run")

    def ratios(self, c: Case) -> dict[str, float]:
        """Throughput of ``c`` divided by each baseline's: 0.25 means a quarter of the baseline's rate."""
        out = {}
        known = {x.name: x for x in self.cases}
        for b in c.compare_to:
            if b in known:  # record baselines first to see the ratio printed as soon as a case ends
                out[b] = round(c.rate / known[b].rate, 3) if known[b].rate else math.nan
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "quick": self.quick,
            "n": self.n,
            "facts": self.facts,
            **({"process_peak_rss_mb": self.process_peak_rss_mb} if self.process_peak_rss_mb else {}),
            "cases": [c.as_dict(self.ratios(c)) for c in self.cases],
        }
