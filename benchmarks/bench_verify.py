"""What vouching for everything costs (issue 14): S9's tile-surface checks and ``segment1b verify-flag``.

Workload (built once per scale in ``<workdir>/verify-<scale>``, then reused; not timed):

* ``x100-5m``: ``segment1b run --seed 42 --scale x100`` on the default 5m grid (3.2 M sites, 2.2 M tiles,
  about 4.4 GB of RNG event logs), made with ``jobs.pipeline.run_pipeline`` on a 2-worker LocalCluster;
* ``2.5m`` / ``30s``: ``segment1b prepare --grid 2.5m`` / ``--grid 30s`` only (8.9 M / 221 M tiles).

Steps:

1. baseline — the tests' client-side reference check, ``tests/reference.py::check_published_weights``:
   tile_index against tile_weights (two of the three surfaces, tile ids only), part by part on the client;
2. S9's surface checks on a 2-worker, 1-thread LocalCluster: the ``s9-surface-NNN`` tasks (three surfaces,
   same tile set, weight sums per country, checked to 10^dp on the client) and the three ``s9-digest`` tasks
   that hash every surface byte (partition digests for the S1/S2 receipts and the bundle's file lists);
3. (``x100-5m``) ``check_flag`` — ``segment1b verify-flag``'s quick default: flag and index, site_locations
   rehashed, every other listed file checked by name and size in its folder's listing;
4. (``x100-5m``) ``check_flag(deep=True)`` — ``verify-flag --deep``: every listed file read and hashed again.

Run: ``python -m benchmarks.run verify --scale x100-5m --workdir /work/bench-out``.
"""

from __future__ import annotations

import io
import os
import time

SCALES = {"x100-5m": {"scale": "x100", "grid": "5m", "seed": 42},
          "2.5m": {"grid": "2.5m"},
          "30s": {"grid": "30s"}}
BASELINE = "baseline: client-side tile_index vs tile_weights check"
SURFACES = "S9 surface checks + surface digests, 2 workers"
QUICK = "verify-flag (quick: listings and sizes)"
DEEP = "verify-flag --deep (rehash every listed file)"


def _reference():
    """``tests/reference.py``: the tests' obviously-correct checks (not a package: loaded from its file)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tests" / "reference.py"
    spec = importlib.util.spec_from_file_location("reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _client():
    from cluster import ClusterOptions, open_client

    return open_client(ClusterOptions(n_workers=2, threads_per_worker=1, dashboard_address=None),
                       out=io.StringIO())


def _root(storage, params: dict, client) -> dict:
    """The run (or the prepared grid) of the scale, built when missing; its identity tokens."""
    from jobs.pipeline import RunRequest, run_pipeline
    from jobs.prepare import prepare

    if "scale" not in params:
        return {"parameter_hash": prepare(storage, client, grid=params["grid"], out=io.StringIO(),
                                          show_progress=False)["parameter_hash"]}
    summary = run_pipeline(storage, client, RunRequest(seed=params["seed"], scale=params["scale"],
                                                       grid=params["grid"]), out=io.StringIO())
    if not summary.passed:
        raise AssertionError(f"the benchmark run did not pass: {summary.failure}")
    return {k: summary.identity[k] for k in ("seed", "manifest_fingerprint", "parameter_hash")}


def _surface_checks(storage, client, parameter_hash: str) -> dict:
    from jobs.runtime import gather, task_key
    from jobs.validate_surfaces import submit_surface_tasks, surface_checks
    from jobs.validate_tasks import TaskResult
    from segment1b import s9
    from segment1b.contracts import path_for
    from segment1b.identity import SegmentParameters

    findings = s9.Findings()
    futures: dict = {}
    stages: dict = {}
    rels = submit_surface_tasks(storage, client, parameter_hash, "bench", futures, stages, findings)
    for n, rel in enumerate(sorted(rels.values())):
        key = task_key("s9", "digest", None, n, "bench")
        futures[key] = client.submit(_timed_digest, storage, rel, key=key, priority=-1)
        stages[key] = "s9 digest"
    results = gather(client, futures, "s9", io.StringIO(), stages=stages)
    surface = [r for r in results.values() if isinstance(r, TaskResult)]
    for r in surface:
        findings.extend(r.findings)
    record = storage.read_json(path_for("parameters", parameter_hash=parameter_hash))
    dp = SegmentParameters.from_canonical(record).dp
    counts = surface_checks(surface, dp, findings)
    if findings:
        raise AssertionError(f"surface checks failed: {findings.codes()}")
    digests = [r for r in results.values() if not isinstance(r, TaskResult)]
    surface_bytes = sum(f["bytes"] for digest, _ in digests for f in digest.files.values())
    tiles = counts["surface_tiles"]
    return {"parts": tiles["parts"], "tiles": tiles["tiles"]["tile_index"],
            "surface_task_cpu_s": sum(r.cpu_s for r in surface),
            "digest_task_cpu_s": sum(cpu for _, cpu in digests),
            "surface_MiB": surface_bytes / 2**20}


def _timed_digest(storage, rel: str):
    """``s9-digest`` (:func:`jobs.validate_tasks.digest_task`) and the CPU seconds it took."""
    from jobs.validate_tasks import digest_task

    c0 = time.thread_time()
    digest = digest_task(storage, rel)
    return digest, time.thread_time() - c0


def run(bench, scale: str, params: dict, workdir: str = "bench-out") -> None:
    from cluster import reset_worker_memory_peaks, worker_memory_peaks
    from segment1b.reader import check_flag
    from segment1b.storage import Storage

    root = os.path.abspath(os.path.join(workdir, f"verify-{scale}"))
    storage = Storage(root)
    with _client() as client:
        ident = _root(storage, params, client)
        ph = ident["parameter_hash"]
        baseline_check = _reference().check_published_weights
        with bench.step(BASELINE):
            countries = baseline_check(storage, ph)
        bench.note(BASELINE, countries=len(countries), tiles=sum(countries.values()))
        reset_worker_memory_peaks(client)
        with bench.step(SURFACES, baseline=BASELINE):
            numbers = _surface_checks(storage, client, ph)
        bench.note(SURFACES, **numbers)
        bench.note_workers(SURFACES, worker_memory_peaks(client))
    if "seed" not in ident:
        return
    for label, deep in ((QUICK, False), (DEEP, True)):
        with bench.step(label):
            check = check_flag(root, ident["seed"], ident["manifest_fingerprint"], deep=deep)
        bench.note(label, files=check.files, folders=check.folders, listed_GiB=check.listed_bytes / 2**30,
                   hashed_GiB=check.hashed_bytes / 2**30)
