"""``python -m bench [--quick] [--only NAME] [--n N] [--list] [--profile]``: run the benchmarks, record results.

Each benchmark writes ``bench/results/<name>-<UTC timestamp>.json`` (``-quick`` appended for a
``--quick`` run, ``-n<N>`` for a size given with ``--n``); ``bench/results/latest.md`` is then
rebuilt from the newest full run of every benchmark (another run only when it has no full run).
When several benchmarks run, each runs in its own process, so each one's peak RSS is its own.
``--profile`` records a py-spy profile of each run in ``bench/results/profiles/`` instead of figures
(sampling costs CPU: a profiled run's figures are not recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import pkgutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench
from bench import BENCHMARKS, Benchmark
from bench.harness import RSS_BUDGET_MB, Run, machine_info, mb, process_peak_rss_kb
from bench.profile import Profiler

RESULTS = Path(__file__).resolve().parent / "results"
NOT_BENCHMARKS = {"__main__", "harness", "stack", "bare_app", "profile"}


def discover() -> None:
    for module in pkgutil.iter_modules(bench.__path__):
        if module.name not in NOT_BENCHMARKS:
            importlib.import_module(f"bench.{module.name}")


# ---------------------------------------------------------------------------------------------
# rendering


def _num(x: float | None, fmt: str = ",.0f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, fmt)


def case_table(result: dict[str, Any]) -> list[str]:
    """Markdown table of one benchmark result (also printed to the terminal)."""
    lines = [
        "| group | case | n | s | rate | vs baseline (rate ratio) | p50 / p99 [/ p99.9] ms (of what) "
        "| CPU µs/op | peak RSS MB |",
        "|---|---|--:|--:|--:|---|---|--:|--:|",
    ]
    for c in result["cases"]:
        name = c["name"] + (" *(baseline)*" if c["kind"] == "baseline" else "")
        ratios = "; ".join(f"**{r:.2f}×** {b}" for b, r in (c.get("ratio_vs") or {}).items())
        lat = c.get("latency") or {}
        lat_text = ""
        if lat:
            p999 = f" / {lat['p999_ms']:.2f}" if lat.get("p999_ms") is not None else ""
            lat_text = f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}{p999} ({lat['of']})"
        # HTTP cases report the CPU and peak RSS of the service under test, named after the figure
        cpu_text = _num(c.get("cpu_us_per_op")) + (f" ({c['cpu_of']})" if c.get("cpu_of") else "")
        rss_text = f"{c['peak_rss_mb']}" + (f" ({c['rss_of']})" if c.get("rss_of") else "")
        lines.append(
            f"| {c['group']} | {name} | {c['n']} | {c['seconds']:.2f} | {_num(c['rate_per_s'])} {c['unit']} "
            f"| {ratios} | {lat_text} | {cpu_text} | {rss_text} |"
        )
    return lines


def result_markdown(result: dict[str, Any], filename: str) -> list[str]:
    m = result["machine"]
    mode = result.get("mode") or ("quick" if result["quick"] else "full")
    peak = result["peak_rss_mb"]
    over = peak is not None and peak > RSS_BUDGET_MB
    cpus = m.get("cpus_usable") or m.get("cpu_count") or 1
    max_load = max((c.get("max_load1") or 0.0 for c in result["cases"]), default=0.0)
    lines = [
        f"## {result['benchmark']} — {result['started_at']} ({mode}, n={result['n']})",
        "",
        f"File: `{filename}`. Machine: {cpus} usable CPUs ({m['cpu_model']}), {m['mem_total_mb']} MB RAM, "
        f"Python {m['python']}, commit {m['git_commit']}{' (dirty tree)' if m['git_dirty'] else ''}. "
        f"Took {result['duration_s']:.0f} s.",
        "",
        *case_table(result),
        "",
        f"Peak RSS of the benchmark process over the whole run: **{peak} MB** "
        f"({'OVER' if over else 'under'} the {RSS_BUDGET_MB} MB service budget).",
    ]
    others = result.get("process_peak_rss_mb") or {}
    if others:
        worst = max((v for v in others.values() if v is not None), default=0.0)
        lines += [
            "",
            "Peak RSS over the run of each process it started (`VmHWM`): "
            + ", ".join(f"{name} **{v} MB**" for name, v in others.items())
            + f" ({'OVER' if worst > RSS_BUDGET_MB else 'all under'} the {RSS_BUDGET_MB} MB service budget).",
        ]
    load_at_start = (m.get("loadavg_at_start") or [0.0])[0]
    if load_at_start > cpus / 2 or max_load > 2 * cpus:
        # The benchmark alone keeps about two or three processes busy (itself, a PostgreSQL backend,
        # RabbitMQ): more than that, or a busy machine before it started, means other work shared it.
        lines += [
            "",
            f"**The machine was shared**: 1-minute load average {load_at_start:.1f} before the run and up to "
            f"{max_load:.1f} during it, on {cpus} CPUs. Wall-clock rates are depressed and ratios noisier than "
            "on a quiet machine; CPU µs/op (of the process named, else this one) is the steadier figure.",
        ]
    facts = result.get("facts") or {}
    if facts:
        lines += ["", "Recorded by the run:", ""]
        lines += [f"- {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in facts.items()]
    extras = [(c["name"], c["extra"]) for c in result["cases"] if c.get("extra")]
    if extras:
        lines += ["", "Case details:", ""]
        lines += [f"- {name}: `{json.dumps(extra, ensure_ascii=False)}`" for name, extra in extras]
    return lines


def rebuild_latest() -> Path:
    """``latest.md``: the newest full run of each benchmark (or its newest quick run if none)."""
    newest: dict[str, tuple[bool, str, Path]] = {}
    for path in RESULTS.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        mode = data.get("mode") or ("quick" if data.get("quick") else "full")
        key = (mode == "full", data.get("started_at", ""), path)
        name = data.get("benchmark", path.stem)
        if name not in newest or key[:2] > newest[name][:2]:
            newest[name] = key
    lines = [
        "# Latest benchmark results",
        "",
        "Written by `make bench` (`python -m bench`); `bench/README.md` says what each case measures.",
        "A ratio is the case's rate ÷ the named baseline's rate, both measured in the same run: 0.50× is",
        "half the baseline's throughput. CPU µs/op is this process's CPU time per operation; peak RSS is",
        "this process's peak while the case ran. Shown: each benchmark's newest full (default-size) run.",
        "",
    ]
    for name in sorted(newest):
        _, _, path = newest[name]
        lines += [*result_markdown(json.loads(path.read_text()), path.name), ""]
    out = RESULTS / "latest.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(out)
    return out


def write_result(result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = result["started_at"].replace("-", "").replace(":", "")
    suffix = {"full": "", "quick": "-quick"}.get(result["mode"], f"-n{result['n']}")
    path = RESULTS / f"{result['benchmark']}-{stamp}{suffix}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------
# running


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed: using the asyncio loop", file=sys.stderr)
            return None
        return uvloop.new_event_loop
    return None


def run_one(b: Benchmark, args: argparse.Namespace) -> bool:
    n = args.n or (b.quick_n if args.quick else b.n)
    mode = "custom" if args.n else "quick" if args.quick else "full"
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    machine = machine_info()
    print(f"== {b.name} ({mode}, n={n}): {b.description}", flush=True)
    run = Run(b.name, quick=args.quick, n=n)
    t0 = time.perf_counter()
    profiler = Profiler(b.name, started_at.replace("-", "").replace(":", "")) if args.profile else None
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            runner.run(b.fn(run))
    except Exception:
        traceback.print_exc()
        print(f"!! {b.name} failed; nothing recorded for it", file=sys.stderr)
        return False
    finally:
        summary = profiler.stop() if profiler is not None else None
    if profiler is not None:
        print(f"profiled: {summary.relative_to(RESULTS.parent.parent) if summary else 'nothing recorded'}")
        return summary is not None
    result = {
        **run.as_dict(),
        "mode": mode,
        "description": b.description,
        "started_at": started_at,
        "duration_s": round(time.perf_counter() - t0, 1),
        "loop": args.loop,
        # getrusage's figure can lag the per-case VmHWM readings slightly: report the larger
        # (cases that report another process's RSS, ``rss_of``, are not this process's peak)
        "peak_rss_mb": max(
            [mb(process_peak_rss_kb()) or 0.0, *(c.peak_rss_mb or 0.0 for c in run.cases if not c.rss_of)]
        ),
        "machine": machine,
    }
    path = write_result(result)
    print()
    print("\n".join(result_markdown(result, path.name)))
    print(f"\nwrote {path.relative_to(RESULTS.parent.parent)}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures to quote")
    parser.add_argument("--only", metavar="NAME", action="append", choices=sorted(BENCHMARKS), help="run only this")
    parser.add_argument("--n", type=int, help="override the benchmark's size")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (services run on uvloop)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="a py-spy profile of each run in bench/results/profiles/, no figures"
    )
    parser.add_argument("--no-latest", action="store_true", help=argparse.SUPPRESS)  # set for child runs
    args = parser.parse_args(argv)

    if args.list:
        for b in BENCHMARKS.values():
            print(f"{b.name:<20} n={b.n} (quick {b.quick_n})  {b.description}")
        return 0

    selected = [BENCHMARKS[n] for n in (args.only or sorted(BENCHMARKS))]
    failed = []
    if len(selected) == 1:
        if not run_one(selected[0], args):
            failed.append(selected[0].name)
    else:
        # One process per benchmark: its own peak RSS, and one failing cannot disturb the next.
        passthrough = [
            *(["--quick"] if args.quick else []),
            *(["--n", str(args.n)] if args.n else []),
            *(["--profile"] if args.profile else []),
        ]
        for b in selected:
            cmd = [sys.executable, "-m", "bench", "--only", b.name, "--loop", args.loop, "--no-latest", *passthrough]
            if subprocess.run(cmd, check=False).returncode != 0:
                failed.append(b.name)
    if not args.no_latest and not args.profile:
        latest = rebuild_latest()
        print(f"updated {latest.relative_to(RESULTS.parent.parent)}")
    if failed:
        print(f"!! failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
