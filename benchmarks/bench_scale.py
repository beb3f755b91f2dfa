"""S0 → S9 at reference, x10, x100 and x1000 on the 5m grid, 2 workers: where the cost per site goes (issue 17).

For each selected scale, into a fresh data root sharing the prepared 5m tile datasets (hard links; S1/S2
are prepared once and not timed), on one LocalCluster of 2 workers (1 thread, 4 GiB each): generate the
catalogue, then S0-S3, S4-S6, S7-S8 and S9 as ``segment1b run`` runs them.  Per state it prints wall and CPU
seconds (the client's, and the tasks' from the run reports), the peak RSS of each worker and of this client
process, the bytes written (datasets; RNG logs) and the **cost per site relative to x100** (wall per site
divided by x100's: flat means linear).  The same run also measures

* S4-S6 at x100 on 1 worker against 2 (the speed-up, writers and logs included), when x100 is selected,
  next to what two processes get from this machine at all (:mod:`benchmarks.machine`);
* reference S4-S6 and S9 with plain ``.jsonl`` logs against the default zstd ones.

Run: ``python -m benchmarks.run scale --scales reference,x10,x100 --workdir /work/bench-out`` (``--scale all``
is reference, x10, x100 and x1000; x1000 needs about 7 GB of free disk with zstd logs).
"""

from __future__ import annotations

import io
import os
import shutil

from .bench_pipeline import _cluster, _fresh_root, _prepared_root
from .machine import parallel_ceiling

SCALES = {"all": ("reference", "x10", "x100", "x1000"), "reference": ("reference",), "x10": ("x10",),
          "x100": ("x100",), "x1000": ("x1000",)}
GRID = "5m"
SEED = 20261202
STATES = ("generate", "s0-s3", "s4-s6", "s7-s8", "s9")
# what each state writes, for the bytes column
WRITES = {"generate": ("outlet_catalogue",), "s0-s3": ("s3_requirements",),
          "s4-s6": ("s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter"),
          "s7-s8": ("s7_site_synthesis", "site_locations"), "s9": ("validation_bundle_1B",)}


def _du(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def _written(root: str, ident, state: str) -> tuple[int, int]:
    """(dataset bytes, RNG log bytes) a state published."""
    from segment1b.contracts import path_for

    data = 0
    for ds in WRITES[state]:
        tokens = ({"seed": ident.seed, "manifest_fingerprint": ident.manifest_fingerprint}
                  if ds in ("outlet_catalogue", "site_locations") else
                  {"manifest_fingerprint": ident.manifest_fingerprint} if ds == "validation_bundle_1B" else ident.tokens)
        data += _du(os.path.join(root, path_for(ds, **tokens)))
    logs = _du(os.path.join(root, "logs")) if state == "s4-s6" else 0
    return data, logs


def _report_cpu(root: str, ident, state: str) -> float:
    """Task CPU seconds of a state from its run reports (the workers' CPU, which the client cannot see)."""
    import json

    from segment1b.contracts import report_path

    states = {"s0-s3": ("s3",), "s4-s6": ("s4", "s5", "s6"), "s7-s8": ("s7", "s8"), "s9": ("s9",)}.get(state, ())
    total = 0.0
    for s in states:
        path = os.path.join(root, report_path(s, **ident.tokens))
        if os.path.exists(path):
            with open(path) as fh:
                total += float(json.load(fh).get("task_cpu_seconds") or 0.0)
    return total


def run_chain(bench, label: str, prepared: str, prep: dict, workdir: str, scale: str, *, n_workers: int = 2,
              rng_logs: str = "zstd", states: tuple[str, ...] = STATES) -> dict[str, dict]:
    """One fresh root, one cluster: generate, S0-S3, S4-S6, S7-S8, S9; returns per-state measurements."""
    from cluster import reset_worker_memory_peaks, worker_memory_peaks
    from jobs.generate import catalogue_countries, countries_from_places, run_generate
    from jobs.pipeline import prepared_grid
    from jobs.place import PlaceConfig, run_place
    from jobs.s3 import run_s3
    from jobs.synthesis import run_s7_s8
    from jobs.validate import run_s9
    from segment1b.identity import RunIdentity, new_run_id
    from segment1b.storage import Storage

    root = os.path.join(workdir, f"scale-{label}")
    _fresh_root(prepared, root)
    storage, ph, log = Storage(root), prep["parameter_hash"], io.StringIO()
    cluster, client = _cluster(n_workers)
    ctx: dict = {}
    steps = {
        "generate": lambda: ctx.update(gen=run_generate(storage, client, countries_from_places(
            catalogue_countries(storage, ph)), scale=scale, seed=SEED, out=log, show=False)),
        "s0-s3": lambda: run_s3(storage, client, ctx["ident"], countries_with_weights=set(
            catalogue_countries(storage, ph)), out=log, show=False),
        "s4-s6": lambda: run_place(storage, client, ctx["ident"], prepared_grid(prep), prep["countries_sha256"],
                                   through="s6", config=PlaceConfig(rng_logs=rng_logs), out=log),
        "s7-s8": lambda: run_s7_s8(storage, client, ctx["ident"], out=log),
        "s9": lambda: ctx.update(s9=run_s9(storage, client, SEED, ctx["ident"].manifest_fingerprint,
                                           parameter_hash=ph, out=log)),
    }
    out: dict[str, dict] = {}
    try:
        for state in states:
            reset_worker_memory_peaks(client)
            step_label = f"{label} {state}"
            with bench.step(step_label):
                steps[state]()
            if state == "generate":
                ctx["ident"] = RunIdentity(seed=SEED, manifest_fingerprint=ctx["gen"]["manifest_fingerprint"],
                                           parameter_hash=ph, run_id=new_run_id())
            peaks = worker_memory_peaks(client)
            bench.note_workers(step_label, peaks)
            step = bench.steps[step_label]
            data, logs = _written(root, ctx["ident"], state)
            out[state] = {"wall_s": step.wall_s, "client_cpu_s": step.cpu_s, "task_cpu_s": _report_cpu(
                root, ctx["ident"], state), "client_peak_rss": step.peak_rss, "worker_peak_rss": peaks,
                "data_bytes": data, "log_bytes": logs}
        if "s9" in ctx and not ctx["s9"].passed:
            raise RuntimeError(f"{label}: S9 failed with {ctx['s9'].failed_codes}")
        out["sites"] = _sites(storage, ctx["ident"])
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)  # x1000 leaves no 7 GB behind
    return out


def _sites(storage, ident) -> int:
    from segment1b.contracts import path_for

    rel = path_for("outlet_catalogue", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    return sum(storage.parquet_metadata(p, dataset_id="outlet_catalogue").num_rows for p in storage.parquet_parts(rel))


def run_scales(bench, scales: tuple[str, ...], workdir: str = "bench-out") -> dict:
    """The benchmark over ``scales``, then the 1->2 worker (x100) and plain-vs-zstd (reference) comparisons."""
    prepared, prep = _prepared_root(workdir, GRID)
    results = {scale: run_chain(bench, scale, prepared, prep, workdir, scale) for scale in scales}
    extra = {}
    if "x100" in scales:
        one = run_chain(bench, "x100-1w", prepared, prep, workdir, "x100", n_workers=1,
                        states=("generate", "s0-s3", "s4-s6"))
        extra["x100 S4-S6 1->2 workers"] = one["s4-s6"]["wall_s"] / results["x100"]["s4-s6"]["wall_s"]
        extra["x100 S4-S6 1 worker wall s"] = one["s4-s6"]["wall_s"]
        # what two processes get from this machine at all (benchmarks.machine): the speed-up's ceiling here
        ceiling = extra["machine 1->2 process ceiling"] = parallel_ceiling()["ceiling"]
        extra["x100 S4-S6 speed-up / ceiling"] = extra["x100 S4-S6 1->2 workers"] / ceiling
    if "reference" in scales:
        plain = run_chain(bench, "reference-plain", prepared, prep, workdir, "reference", rng_logs="plain")
        z = results["reference"]
        for state in ("s4-s6", "s9"):
            extra[f"reference {state} zstd/plain wall"] = z[state]["wall_s"] / plain[state]["wall_s"]
        extra["reference logs zstd/plain bytes"] = z["s4-s6"]["log_bytes"] / plain["s4-s6"]["log_bytes"]
    print_table(results, extra, bench.out)
    return {"results": results, "comparisons": extra}


def print_table(results: dict[str, dict], extra: dict[str, float], out) -> None:
    """Per scale and state: wall, CPU, RSS, bytes and cost per site relative to x100."""
    ref = results.get("x100")
    print(f"\n== scale, {GRID} grid, 2 workers ==", file=out)
    print(f"{'scale':<10}{'state':<10}{'sites':>11}{'wall s':>9}{'task cpu':>9}{'max wkr':>9}{'client':>8}"
          f"{'data MB':>9}{'logs MB':>9}{'B/event*':>9}{'cost/site vs x100':>19}", file=out)
    for scale, res in results.items():
        sites = res["sites"]
        for state in STATES:
            r = res[state]
            rel = "-"
            if ref is not None and ref[state]["wall_s"] > 0:
                rel = f"{(r['wall_s'] / sites) / (ref[state]['wall_s'] / ref['sites']):.2f}x"
            wmax = max(r["worker_peak_rss"].values()) if r["worker_peak_rss"] else 0
            per_site_logs = f"{r['log_bytes'] / sites:.0f}" if r["log_bytes"] else "-"
            print(f"{scale:<10}{state:<10}{sites:>11,}{r['wall_s']:>9.1f}{r['task_cpu_s']:>9.1f}{wmax / 2**20:>8.0f}M"
                  f"{r['client_peak_rss'] / 2**20:>7.0f}M{r['data_bytes'] / 1e6:>9.1f}{r['log_bytes'] / 1e6:>9.1f}"
                  f"{per_site_logs:>9}{rel:>19}", file=out)
        total = sum(res[s]["wall_s"] for s in STATES)
        print(f"{scale:<10}{'total':<10}{sites:>11,}{total:>9.1f}", file=out)
    print("  * logs: bytes per site (S5 + S6 events together)", file=out)
    for k, v in extra.items():
        print(f"  {k}: {v:.2f}", file=out)
    out.flush()


def run(bench, scale: str, params: tuple[str, ...], workdir: str = "bench-out") -> None:
    run_scales(bench, params, workdir)
