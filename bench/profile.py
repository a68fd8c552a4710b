"""``python -m bench --profile``: a py-spy profile of a benchmark's run, kept in ``bench/results/profiles/``.

py-spy samples the benchmark process and every process it starts through ``bench/stack.py`` (the
services under test, the bare baselines, the sandbox: one recorder each, attached as it starts)
100 times a second without pausing them (``--nonblocking``), and only stacks that are running (idle
threads and an event loop waiting in ``epoll`` are left out). Two files per benchmark run:

* ``<benchmark>-<stamp>.collapsed.gz`` — every sampled stack with its count (Brendan Gregg's
  collapsed format: ``flamegraph.pl`` or speedscope.app read it);
* ``<benchmark>-<stamp>.md`` — per process, its share of the samples and the functions with the most
  samples on the CPU themselves (self) and under them (total).

Sampling costs the profiled processes a little CPU, so a profiled run's figures are not the ones to
quote: profile in a run of its own (``make bench`` records figures without it).
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "bench" / "results" / "profiles"
TOP = 25


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: `uv sync` installs it (a dev dependency)")
    return found


_active: Profiler | None = None


def follow(name: str, pid: int) -> None:
    """A process the benchmark started: profile it too when this run is profiled."""
    if _active is not None:
        _active.follow(name, pid)


def _record(pid: int, output: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [py_spy(), "record", "--pid", str(pid), "--nonblocking", "--rate", "100", "--format", "raw",
         "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


class Profiler:
    """py-spy recording this process, and each process :func:`follow` names, until :meth:`stop`."""

    def __init__(self, name: str, stamp: str) -> None:
        global _active
        PROFILES.mkdir(parents=True, exist_ok=True)
        self.base = PROFILES / f"{name}-{stamp}"
        self.recorders: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self.follow("bench", os.getpid())
        _active = self

    def follow(self, name: str, pid: int) -> None:
        output = self.base.with_name(f"{self.base.name}.{name}-{pid}.part")
        self.recorders.append((name, output, _record(pid, output)))

    def stop(self) -> Path | None:
        """Stop recording; the summary's path (None when py-spy wrote nothing)."""
        global _active
        _active = None
        lines: list[str] = []
        for name, output, proc in self.recorders:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not output.exists():
                print(f"py-spy wrote no profile of {name}: {err.decode(errors='replace')[-300:]}", file=sys.stderr)
                continue
            lines += [f"process {name};{line}" for line in output.read_text(errors="replace").splitlines() if line]
            output.unlink()
        if not lines:
            return None
        text = "\n".join(lines) + "\n"
        with gzip.open(self.base.with_suffix(".collapsed.gz"), "wt", encoding="utf-8") as out:
            out.write(text)
        summary = self.base.with_suffix(".md")
        summary.write_text("\n".join(summarize(text, title=self.base.name)) + "\n", encoding="utf-8")
        return summary


def summarize(text: str, *, title: str) -> list[str]:
    """Per process: samples, and the top functions by self and by total samples."""
    per_process: Counter[str] = Counter()
    self_counts: dict[str, Counter[str]] = defaultdict(Counter)
    total_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        process = "this process"
        if frames and frames[0].startswith("process "):
            process, frames = frames[0].removeprefix("process "), frames[1:]
        # py-spy's thread frame ("thread (0x...)") and the process frame are not functions.
        frames = [f for f in frames if not f.startswith("thread (")]
        if not frames:
            continue
        per_process[process] += count
        self_counts[process][_short(frames[-1])] += count
        for f in {_short(f) for f in frames}:
            total_counts[process][f] += count
    all_samples = sum(per_process.values()) or 1
    lines = [
        f"# Profile: {title}",
        "",
        "py-spy, 100 samples/s of running (not idle) stacks, every Python process of the run. A sample is",
        "10 ms of CPU; self = on the CPU in that function, total = that function or anything it called.",
        "",
        "| process | samples | share |",
        "|---|--:|--:|",
    ]
    lines += [f"| {p} | {n} | {n / all_samples:.0%} |" for p, n in per_process.most_common()]
    for process, n in per_process.most_common():
        if n < 50:
            continue
        lines += ["", f"## {process} ({n} samples)", "", "| self | share | function |", "|--:|--:|---|"]
        lines += [f"| {c} | {c / n:.1%} | `{f}` |" for f, c in self_counts[process].most_common(TOP)]
        lines += ["", "| total | share | function |", "|--:|--:|---|"]
        lines += [f"| {c} | {c / n:.1%} | `{f}` |" for f, c in total_counts[process].most_common(TOP)]
    return lines


def _short(frame: str) -> str:
    """``handle (shared/bus/consumer.py:120)`` → ``handle (shared/bus/consumer.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name
