"""Benchmark harness: named scales, per-step wall/CPU seconds, peak RSS, ratios against a baseline.

An entry is a module ``benchmarks/bench_<name>.py`` with ``SCALES`` (name -> parameters) and
``run(bench, scale_name, params)``.  Inside, each timed operation is one ``with bench.step(label)``; a
step may name the ``baseline`` step it is compared with, and the report prints the ratio of the two
wall times measured in the same run.  Steps that run on a Dask cluster pass the peak RSS of every
worker (from the job's run report) with :meth:`Bench.note_workers`.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Bench", "Step", "reset_peak_rss", "peak_rss_bytes"]


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux: VmHWM) so the next reading covers one step only."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """Peak RSS of this process since the last reset (VmHWM), falling back to ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Step:
    label: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss: int = 0
    baseline: str | None = None
    workers_peak_rss: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)


class Bench:
    """Collects steps for one entry at one scale and prints them."""

    def __init__(self, entry: str, scale: str, out=None):
        self.entry, self.scale = entry, scale
        self.steps: dict[str, Step] = {}
        self.out = out or sys.stdout

    @contextmanager
    def step(self, label: str, *, baseline: str | None = None):
        """Time one operation: wall and CPU seconds (this process and its reaped children), peak RSS."""
        reset_peak_rss()
        step = Step(label, baseline=baseline)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            yield step
        finally:
            step.wall_s = time.perf_counter() - t0
            step.cpu_s = _cpu_seconds() - c0
            step.peak_rss = peak_rss_bytes()
            self.steps[label] = step
            self._print_step(step)

    def note(self, label: str, **numbers: float) -> None:
        """Attach named numbers (rates, counts) to a finished step."""
        self.steps[label].numbers.update(numbers)
        print(f"    {label}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in numbers.items()), file=self.out, flush=True)

    def note_workers(self, label: str, peaks: dict[str, int]) -> None:
        """Record the peak RSS of each Dask worker during a step."""
        self.steps[label].workers_peak_rss.update(peaks)
        if peaks:
            print(f"    {label}: peak worker RSS " + ", ".join(f"{_mib(v)}" for v in peaks.values())
                  + f" (max {_mib(max(peaks.values()))})", file=self.out, flush=True)

    def ratio(self, label: str) -> float | None:
        step = self.steps[label]
        if not step.baseline or step.baseline not in self.steps or step.wall_s == 0:
            return None
        return self.steps[step.baseline].wall_s / step.wall_s

    def _print_step(self, step: Step) -> None:
        print(f"  [{self.entry}/{self.scale}] {step.label}: wall {step.wall_s:.3f} s, cpu {step.cpu_s:.3f} s, "
              f"peak RSS {_mib(step.peak_rss)}", file=self.out, flush=True)

    def report(self) -> dict:
        """Print the summary table and return it as a dict (also written as JSON by the runner)."""
        print(f"\n== {self.entry} @ {self.scale} ==", file=self.out)
        print(f"{'step':<44}{'wall s':>10}{'cpu s':>10}{'peak RSS':>12}{'max worker':>12}{'speed-up':>10}",
              file=self.out)
        for step in self.steps.values():
            r = self.ratio(step.label)
            wmax = max(step.workers_peak_rss.values()) if step.workers_peak_rss else 0
            print(f"{step.label:<44}{step.wall_s:>10.3f}{step.cpu_s:>10.3f}{_mib(step.peak_rss):>12}"
                  f"{(_mib(wmax) if wmax else '-'):>12}{(f'{r:.1f}x' if r else '-'):>10}", file=self.out)
            if r:
                print(f"{'':<4}(vs {step.baseline})", file=self.out)
        self.out.flush()
        return {"entry": self.entry, "scale": self.scale, "host": os.uname().nodename, "cpus": os.cpu_count(),
                "steps": [{**step.__dict__, "speedup_vs_baseline": self.ratio(step.label)}
                          for step in self.steps.values()]}


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _fmt(v) -> str:
    return f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def dump(result: dict, path: str) -> None:
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
