"""Siyu's benchmarks: ``make bench`` (``python -m bench``) runs every one registered here.

A benchmark module in this package registers an ``async def bench(run: Run) -> None`` with
:func:`register`; ``python -m bench`` imports every module of the package, runs the registered
benchmarks one after another and writes ``bench/results/<name>-<UTC time>.json`` and
``bench/results/latest.md``. See ``bench/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bench.harness import Run

BenchFn = Callable[[Run], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    fn: BenchFn
    n: int
    quick_n: int
    description: str


BENCHMARKS: dict[str, Benchmark] = {}


def register(name: str, *, n: int, quick_n: int, description: str) -> Callable[[BenchFn], BenchFn]:
    """Register a benchmark under ``name`` with its default and ``--quick`` sizes."""

    def deco(fn: BenchFn) -> BenchFn:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = Benchmark(name, fn, n, quick_n, description)
        return fn

    return deco
