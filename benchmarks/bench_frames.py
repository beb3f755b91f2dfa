"""S4-S6 two ways: the CLI's futures runner against the lazy dataframe API with ``to_parquet`` (issue 16).

Workload per scale: the grid prepared once into ``<workdir>/pipeline-<grid>/`` (as ``bench_pipeline``; not
timed), a generated catalogue of the named size and its S3 requirements (published once into a base root).
Then, alternating A B C A B C ... (the machine is shared: compare the ratios of neighbouring runs, and the
workers' CPU seconds, which other jobs on the machine do not inflate), each run on a fresh LocalCluster of 2 workers x 1 thread with a 4 GiB limit, so that caches and memory peaks are its own:

* A, ``jobs.place.run_place(through="s6")`` into a fresh root (hard links of the base): S4, S5, S6 published
  as contract Parquet parts, the S5/S6 RNG events as JSON lines, run reports;
* B, :mod:`jobs.frames` as a user runs it, on the base root with the same units (``UnitSizing`` from the
  CLI's sizing on this cluster): ``to_parquet`` of the plan, the sites, the located points (GeoParquet: S6
  + S7 columns and the geometry) and both RNG event collections, in one ``dask.compute`` (the kernel
  layers are shared);
* C, the CLI's outputs through the same frames (what ``segment1b run`` would do on this engine): the plan,
  the sites and the S6 rows (the accepted ``jitter_events``, no geometry) as zstd Parquet, and the RNG
  events as the contract's JSON lines, written per partition with the CLI's writers.

Each step reports wall and peak RSS per worker, and the busy seconds of each layer (task stream).  After the runs, A's published S4/S5/S6 and B's files are
read back and compared row by row (sorted by the contract's writer order).

Run: ``python -m benchmarks.run frames --scale x100-30s --workdir /work/bench-out``; ``--scale reference-5m``
is a quick check.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess

from segment1b.identity import utc_now

from .bench_pipeline import _cluster, _fresh_root, _prepared_root

SCALES = {
    "reference-5m": {"grid": "5m", "scale": "reference", "rounds": 2},
    "x100-30s": {"grid": "30s", "scale": "x100", "rounds": 3},
}
SEED = 20261125
KEYS = ["merchant_id", "legal_country_iso", "site_order"]


def run(bench, scale: str, params: dict, workdir: str = "bench-out") -> None:
    from jobs.generate import catalogue_countries, countries_from_places, run_generate
    from jobs.s3 import run_s3
    from segment1b.identity import RunIdentity
    from segment1b.storage import Storage

    prepared, prep = _prepared_root(workdir, params["grid"])
    ph = prep["parameter_hash"]
    base = os.path.join(workdir, f"frames-{scale}")
    _fresh_root(prepared, base)
    storage = Storage(base)
    cluster, client = _cluster(2)
    try:
        eligible = catalogue_countries(storage, ph)
        gen = run_generate(storage, client, countries_from_places(eligible), scale=params["scale"], seed=SEED,
                           out=io.StringIO(), show=False)
        ident = RunIdentity(seed=SEED, manifest_fingerprint=gen["manifest_fingerprint"], parameter_hash=ph,
                            run_id="f" * 32)
        run_s3(storage, client, ident, countries_with_weights=set(eligible), out=io.StringIO(), show=False)
    finally:
        client.close()
        cluster.close()
    sites = int(gen["summary"]["rows"])
    outputs = {}
    for r in range(1, params["rounds"] + 1):
        a = f"A futures runner (run_place), round {r}"
        outputs["A"] = _futures(bench, a, base, prep, ident, workdir)
        outputs["B"] = _frames(bench, f"B frames, user outputs, round {r}", base, ident, workdir, "user", a)
        outputs["C"] = _frames(bench, f"C frames, CLI outputs, round {r}", base, ident, workdir, "cli", a)
    for label, step in bench.steps.items():
        bench.note(label, sites=sites, sites_per_s=round(sites / step.wall_s))
    _compare(bench, outputs["A"], outputs["B"], ident, "located")
    _compare(bench, outputs["A"], outputs["C"], ident, "s6")
    for root in (base, *outputs.values()):
        shutil.rmtree(root, ignore_errors=True)


def _futures(bench, label, base, prep, ident, workdir) -> str:
    from distributed import get_task_stream

    from cluster import reset_worker_memory_peaks, worker_memory_peaks
    from jobs.pipeline import prepared_grid
    from jobs.place import PlaceConfig, run_place
    from segment1b.storage import Storage

    root = os.path.join(workdir, "frames-a")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for sub in ("data", "control", "reference"):  # the base root's surfaces, catalogue and S3 (hard links)
        if os.path.exists(os.path.join(base, sub)):
            subprocess.run(["cp", "-al", os.path.join(base, sub), os.path.join(root, sub)], check=True)
    cluster, client = _cluster(2)
    try:
        reset_worker_memory_peaks(client)
        cpu = _workers_cpu(client)
        with get_task_stream(client) as stream, bench.step(label):
            run_place(Storage(root), client, ident, prepared_grid(prep), prep["countries_sha256"], through="s6",
                      config=PlaceConfig(), out=io.StringIO())
        bench.note_workers(label, worker_memory_peaks(client))
        bench.note(label, workers_cpu_s=round(_workers_cpu(client) - cpu, 2), **_busy(stream.data))
    finally:
        client.close()
        cluster.close()
    return root


def _frames(bench, label, base, ident, workdir, outputs, baseline) -> str:
    import dask
    from distributed import get_task_stream

    from cluster import reset_worker_memory_peaks, worker_memory_peaks
    from jobs.frames import (Streams, Surfaces, UnitSizing, allocate, assign, assign_events, jitter,
                             jitter_events, read_requirements)
    from jobs.place import PlaceConfig, _memory_bound_sites

    out = os.path.join(workdir, f"frames-{outputs}")
    shutil.rmtree(out, ignore_errors=True)
    cluster, client = _cluster(2)
    try:
        config = PlaceConfig()  # the CLI's unit sizing on this cluster (jobs.place._run_place)
        max_unit = min(config.max_unit_sites, _memory_bound_sites(client))
        sizing = UnitSizing(config.part_sites, max_unit, min(config.min_unit_sites, max_unit), config.skew,
                            len(client.scheduler_info()["workers"]))
        seed, fp, ph = ident.seed, ident.manifest_fingerprint, ident.parameter_hash
        reset_worker_memory_peaks(client)
        cpu = _workers_cpu(client)
        with get_task_stream(client) as stream, bench.step(label, baseline=baseline):
            requirements = read_requirements(base, seed, fp, ph, sizing=sizing)
            surfaces, streams = Surfaces(base, ph), Streams(seed, fp, ph)
            plan = allocate(requirements, surfaces)
            sites = assign(plan, streams)
            s5_events, s6_events = assign_events(plan, streams), jitter_events(sites, surfaces, streams)
            if outputs == "user":
                frames = {"s4": plan, "s5": sites, "located": jitter(sites, surfaces, streams),
                          "s5_events": s5_events, "s6_events": s6_events}
                dask.compute(*[f.to_parquet(os.path.join(out, name), compute=False) for name, f in frames.items()])
            else:
                s6 = s6_events[s6_events["accepted"]][["merchant_id", "legal_country_iso", "site_order", "tile_id",
                                                      "delta_lat_deg", "delta_lon_deg"]]
                frames = {"s4": plan, "s5": sites, "s6": s6}
                envelope = {"ts_utc": utc_now(), "run_id": "f" * 32, "seed": seed, "parameter_hash": ph,
                            "manifest_fingerprint": fp}
                logs = [ev.map_partitions(_write_jsonl, os.path.join(out, label_), label_, envelope,
                                          meta={"rows": "int64"}) for label_, ev in
                        (("site_tile_assign", s5_events), ("in_cell_jitter", s6_events))]
                dask.compute(*[f.to_parquet(os.path.join(out, name), compute=False, compression="zstd")
                               for name, f in frames.items()], *logs)
        bench.note_workers(label, worker_memory_peaks(client))
        bench.note(label, workers_cpu_s=round(_workers_cpu(client) - cpu, 2), partitions=requirements.npartitions,
                   **_busy(stream.data))
    finally:
        client.close()
        cluster.close()
    return out


EVENT_CHUNK = 1 << 16  # events formatted at a time, as the CLI's part writers do


def _write_jsonl(events, folder: str, label: str, envelope: dict, partition_info=None):
    """Task: one partition's events as the contract's JSON lines (the CLI's writers), in chunks."""
    import numpy as np
    import pandas as pd

    from segment1b import rng, rng_events

    os.makedirs(folder, exist_ok=True)
    cols = {k: events[k].to_numpy() for k in events.columns if k != "legal_country_iso"}
    iso = events["legal_country_iso"].to_numpy(str)
    counters = [cols[k] for k in ("rng_counter_before_hi", "rng_counter_before_lo", "rng_counter_after_hi",
                                  "rng_counter_after_lo")]
    with open(os.path.join(folder, f"part-{partition_info['number']:05d}.jsonl"), "wb") as fh:
        for a in range(0, len(events), EVENT_CHUNK):
            b = slice(a, a + EVENT_CHUNK)
            site = (cols["merchant_id"][b], iso[b], cols["site_order"][b], cols["tile_id"][b])
            if label == rng.S5_LABEL:
                fh.write(rng_events.s5_events_jsonl(envelope, *site, cols["u"][b], *(c[b] for c in counters)))
            else:
                fh.write(rng_events.s6_events_jsonl(envelope, *site, cols["attempt_index"][b], cols["accepted"][b],
                                             cols["delta_lat_deg"][b], cols["delta_lon_deg"][b],
                                             *(c[b] for c in counters)))
    return pd.DataFrame({"rows": np.array([len(events)], np.int64)})


def _cpu_seconds() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def _workers_cpu(client) -> float:
    """CPU seconds the worker processes have used (robust to other jobs on the machine, unlike wall)."""
    return sum(client.run(_cpu_seconds).values())


def _busy(stream: list[dict]) -> dict[str, float]:
    """Busy seconds per task prefix (state-action, without the country) from a task stream."""
    from collections import defaultdict

    from dask.utils import key_split

    busy: dict[str, float] = defaultdict(float)
    for task in stream:
        prefix = "-".join(key_split(task["key"]).split("-")[:2])
        busy[f"busy_{prefix}"] += sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute")
    return {k: round(v, 2) for k, v in sorted(busy.items(), key=lambda kv: -kv[1])}


def _compare(bench, root_a: str, out_b: str, ident, s6_name: str) -> None:
    """A's published S4/S5/S6 rows equal those written by a frames run (sorted by the writer order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from segment1b.contracts import path_for
    from segment1b.storage import Storage

    storage = Storage(root_a)

    def published(ds):
        parts = storage.parquet_parts(path_for(ds, **ident.tokens))
        return pa.concat_tables([pq.read_table(storage.abspath(p)) for p in parts]).to_pandas()

    def written(name, columns, keys):
        frame = pq.read_table(os.path.join(out_b, name), columns=columns).to_pandas()
        return frame.sort_values(keys, kind="stable").reset_index(drop=True)

    checks = {"s4_alloc_plan": ("s4", ["merchant_id", "legal_country_iso", "tile_id"]),
              "s5_site_tile_assignment": ("s5", KEYS), "s6_site_jitter": (s6_name, KEYS)}
    same = {}
    for ds, (name, keys) in checks.items():
        want = published(ds).drop(columns=["manifest_fingerprint"], errors="ignore")
        got = written(name, list(want.columns), keys).astype(want.dtypes.to_dict())
        same[ds] = bool(got.equals(want))
    print(f"    rows of A and {os.path.basename(out_b)} equal: {same}", file=bench.out)
    if not all(same.values()):
        raise RuntimeError(f"the futures runner and the lazy frames disagree: {same}")
