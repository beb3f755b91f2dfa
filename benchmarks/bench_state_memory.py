"""Peak memory of every task of a whole run, per unit of work: the basis of ``jobs/footprint.py``.

Workload per scale: ``segment1b run`` (S1-S9, the embedded countries and population proxy on a named
grid, a generated catalogue of the named size) on a LocalCluster of **one worker with one thread** and a
generous limit, so that every task runs alone and its memory is its own.  A worker plugin resets the
worker's peak RSS (VmHWM) when a task starts and reads it when the task ends: each task's *rise* is
``peak − RSS at start`` and the worker's RSS at the start of a task is its floor plus what it holds.
S1/S2 are prepared in the same worker first (``prepare-*`` scales: only them).

Each task is mapped to its unit of work: the sites of its part (S4-S6 writers, S7, S9 part tasks, from the
S3 requirements and ``--part-sites``), the weighted tiles of its country (S4 weights, S9 plan, from the S2
report) or its cells (S1 unit, S2 country, from the S1 plan).  The report prints, per task group, the
largest peak, its unit and bytes per unit, and compares the run's largest peak with the model of
``jobs.footprint`` (floor + largest need): the model must be an upper bound.  With ``check`` in the scale
the run is repeated on 2 workers whose limit is the model's minimum (``minimum_memory_limit``), which
must pass.

Run: ``python -m benchmarks.run state_memory --scale x10-5m --workdir /work/bench-out`` (also
``tiny-30m``, ``reference-5m``, ``reference-30s``, ``prepare-30s``).
"""

from __future__ import annotations

import io
import os
import shutil
from collections import defaultdict

from distributed import WorkerPlugin

SCALES = {
    "tiny-30m": {"grid": "30m", "scale": "tiny"},
    "reference-5m": {"grid": "5m", "scale": "reference"},
    "x10-5m": {"grid": "5m", "scale": "x10", "check": True},
    "reference-30s": {"grid": "30s", "scale": "reference"},
    "prepare-5m": {"grid": "5m", "scale": None},
    "prepare-30s": {"grid": "30s", "scale": None},
}
SEED = 42
MiB = 2**20


class TaskPeaks(WorkerPlugin):
    """Per task: (key, RSS when it started, peak RSS while it ran).  One thread per worker only."""

    name = "segment1b-bench-task-peaks"

    def __init__(self):
        self.records: list[tuple[str, int, int]] = []
        self._started: dict[str, int] = {}

    def transition(self, key, start, finish, **kwargs):
        import psutil

        from cluster.memory import peak_rss, reset_peak_rss

        if finish == "executing":
            self._started[str(key)] = psutil.Process().memory_info().rss
            reset_peak_rss()
        elif start == "executing" and str(key) in self._started:
            self.records.append((str(key), self._started.pop(str(key)), peak_rss()))


def _records(dask_worker):
    return dask_worker.plugins[TaskPeaks.name].records


def _cluster(n_workers: int, memory_limit: str | int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=50, memory_limit=memory_limit,
                           scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    return cluster, Client(cluster)


def _units(storage, ident, grid_name: str) -> dict[str, int]:
    """Unit of work of every task-key prefix: part sites, country weighted tiles, S1/S2 cells."""
    import numpy as np
    import pyarrow as pa

    from jobs.units import DEFAULT_PART_SITES, plan_parts
    from segment1b import refdata
    from segment1b.contracts import path_for, report_path
    from segment1b.grid import Grid
    from segment1b.s1_tile_index import plan_units

    units: dict[str, int] = {}
    polys = refdata.default_countries()
    cells: dict[str, int] = defaultdict(int)
    for u in plan_units(list(zip(polys.iso, polys.geometry)), Grid.named(grid_name)):
        units[f"s1-tiles-{u.country_iso}-{u.band:03d}"] = u.cells
        cells[u.country_iso] += u.cells
    units.update({f"s2-weights-{c}": n for c, n in cells.items()})
    s2 = storage.read_json(report_path("s2", parameter_hash=ident["parameter_hash"]))
    for c in s2["countries"]:
        for prefix in ("s4-weights", "s9-plan"):
            units[f"{prefix}-{c['country_iso']}"] = c.get("weighted_tiles", c["rows"])
    if ident.get("manifest_fingerprint"):
        rel = path_for("s3_requirements", **{k: ident[k] for k in ("seed", "manifest_fingerprint", "parameter_hash")})
        t = pa.concat_tables([storage.read_parquet(p) for p in storage.parquet_parts(rel)])
        for p in plan_parts(t["merchant_id"].to_numpy(), np.asarray(t["n_sites"].to_numpy()), DEFAULT_PART_SITES):
            for prefix in ("s4-write", "s5-write", "s6-write", "s7-synth", "s9-tables", "s9-rng5", "s9-rng6"):
                units[f"{prefix}-{p.index:03d}"] = p.sites
    return units


def _group(key: str) -> tuple[str, str]:
    """(task group, unit key) of a task key ``s6-write-000-1a2b3c4d``."""
    words = key.split("-")[:-1]  # drop the token
    return "-".join(words[:2]), "-".join(words)


def run(bench, scale: str, params: dict, workdir: str = "bench-out") -> None:
    from jobs import footprint
    from jobs.pipeline import RunRequest, run_pipeline
    from jobs.prepare import prepare
    from segment1b.storage import Storage

    root = os.path.join(workdir, f"state-memory-{scale}")
    shutil.rmtree(root, ignore_errors=True)
    storage = Storage(root)
    cluster, client = _cluster(1, "16GiB")
    try:
        client.register_plugin(TaskPeaks())
        label = f"{'prepare' if params['scale'] is None else 'run'} on 1 worker, {scale}"
        with bench.step(label):
            if params["scale"] is None:
                summary = prepare(storage, client, grid=params["grid"], out=io.StringIO(), show_progress=False)
                ident = {"parameter_hash": summary["parameter_hash"]}
            else:
                ident = run_pipeline(storage, client, RunRequest(seed=SEED, scale=params["scale"],
                                                                 grid=params["grid"]), out=io.StringIO()).identity
        (records,) = client.run(_records).values()
    finally:
        client.close()
        cluster.close()

    units = _units(storage, ident, params["grid"])
    top: dict[str, tuple[int, int, int, str]] = {}
    for key, before, peak in records:
        group, unit_key = _group(key)
        if group not in top or peak > top[group][1]:
            top[group] = (before, peak, units.get(unit_key, 0), unit_key)
    print(f"    {'task group':<16}{'peak MiB':>10}{'at start':>10}{'rise':>8}{'unit':>14}{'B/unit':>8}  largest",
          file=bench.out)
    for group, (before, peak, unit, unit_key) in sorted(top.items(), key=lambda kv: -kv[1][1]):
        per = f"{(peak - before) / unit:8.0f}" if unit else f"{'-':>8}"
        print(f"    {group:<16}{peak / MiB:>10.0f}{before / MiB:>10.0f}{(peak - before) / MiB:>8.0f}{unit:>14,}{per}  "
              f"{unit_key}", file=bench.out)
    peak = max(p for _, _, p in records)
    needs = _model_needs(storage, ident, params, units)
    model = footprint.WORKER_FLOOR_BYTES + max(n.bytes for n in needs)
    minimum, largest = footprint.minimum_memory_limit(needs)
    bench.note(label, tasks=len(records), peak_rss_mib=round(peak / MiB), model_peak_mib=round(model / MiB),
               model_over_measured=round(model / peak, 2), minimum_limit_mib=round(minimum / MiB),
               deciding_need=largest.what)
    if params.get("check"):
        _check_minimum(bench, storage, params, minimum, workdir)


def _model_needs(storage, ident, params, units: dict[str, int]):
    from jobs import footprint
    from jobs.units import DEFAULT_PART_SITES
    from segment1b import refdata
    from segment1b.grid import Grid
    from segment1b.s1_tile_index import plan_units

    if params["scale"] is None:
        polys = refdata.default_countries()
        return footprint.prepare_needs(plan_units(list(zip(polys.iso, polys.geometry)), Grid.named(params["grid"])))
    sites = footprint.expected_sites(params["scale"])
    plan = max(((k.split("-")[-1], v) for k, v in units.items() if k.startswith("s9-plan-")), key=lambda kv: kv[1])
    return [footprint.part_need(footprint.largest_part(sites, DEFAULT_PART_SITES)), footprint.plan_need(*plan)]


def _check_minimum(bench, storage, params, minimum: int, workdir: str) -> None:
    """The run again on 2 workers at the model's minimum limit: it must pass (the watchdog bounds a stall)."""
    from jobs.pipeline import RunRequest, run_pipeline
    from segment1b.storage import Storage

    from benchmarks.bench_pipeline import _fresh_root

    root = os.path.join(workdir, f"state-memory-check-{params['scale']}")
    _fresh_root(storage.root_url, root)  # the prepared tile data only (hard links)
    cluster, client = _cluster(2, minimum)
    label = f"run on 2 workers at the minimum limit {minimum // MiB} MiB"
    try:
        with bench.step(label):
            summary = run_pipeline(Storage(root), client, RunRequest(seed=SEED, scale=params["scale"],
                                                                     grid=params["grid"]), out=io.StringIO())
        bench.note(label, passed=bool(summary.passed))
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)
