"""S3 → S9 of ``segment1b run`` on real reference data: per-state wall, peak worker RSS, 1 vs 2 workers.

Workload per scale: the embedded Natural Earth countries and GeoNames population proxy on a named grid
(S1/S2 prepared once into ``<workdir>/pipeline-<grid>/``, not timed here: see ``bench_prepare``), a
generated outlet catalogue of the named size, then each state as ``run`` runs it (S4 alone with
``--through s4``, then S5+S6, which recompute S4 in memory to feed S5 without rewriting it).  The whole chain runs
twice, on a LocalCluster of 1 worker (the baseline) and of 2 workers (1 thread each, 4 GiB limit), each
into a fresh data root that shares the prepared tile datasets by hard links.  The report prints the
speed-up of every state from 1 to 2 workers and checks that both runs published identical datasets.

Run: ``python -m benchmarks.run pipeline --scale reference-30s --workdir /work/bench-out``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess

SCALES = {
    "reference-5m": {"grid": "5m", "scale": "reference"},
    "reference-30s": {"grid": "30s", "scale": "reference"},
    "x10-30s": {"grid": "30s", "scale": "x10"},
    "x100-30s": {"grid": "30s", "scale": "x100"},
    "x100-5m": {"grid": "5m", "scale": "x100"},
    "x1000-5m": {"grid": "5m", "scale": "x1000"},
}
SEED = 20261125
DATASETS = ("s3_requirements", "s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter", "s7_site_synthesis")


def _cluster(n_workers: int):
    from distributed import Client, LocalCluster

    from cluster.client import short_message_logs

    with short_message_logs():  # as `segment1b run` starts its cluster (issue 17: the client's memory)
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=50, memory_limit="4GiB",
                               scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
        return cluster, Client(cluster)


def _prepared_root(workdir: str, grid: str) -> tuple[str, dict]:
    """Prepare the grid once (idempotent) and return the root and the prepare summary."""
    from jobs.prepare import prepare
    from segment1b.storage import Storage

    root = os.path.join(workdir, f"pipeline-{grid}")
    cluster, client = _cluster(2)
    try:
        summary = prepare(Storage(root), client, grid=grid, out=io.StringIO(), show_progress=False)
    finally:
        client.close()
        cluster.close()
    return root, summary


def _fresh_root(prepared: str, dest: str) -> None:
    """A data root holding only the prepared reference data (hard links: no copy)."""
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    for sub in ("data", "control", "reference"):
        src = os.path.join(prepared, sub)
        if os.path.exists(src):
            subprocess.run(["cp", "-al", src, os.path.join(dest, sub)], check=True)
    # keep only what prepare made (tile datasets, their reports, parameters, reference polygons)
    for sub in ("data/layer1/1A", "control/run"):
        shutil.rmtree(os.path.join(dest, sub), ignore_errors=True)
    for sub in ("s3_requirements", "s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter",
                "s7_site_synthesis", "site_locations", "validation", "s0_gate_receipt"):
        shutil.rmtree(os.path.join(dest, "data/layer1/1B", sub), ignore_errors=True)
    shutil.rmtree(os.path.join(dest, "logs"), ignore_errors=True)


def run(bench, scale: str, params: dict, workdir: str = "bench-out") -> None:
    from cluster import reset_worker_memory_peaks, worker_memory_peaks
    from jobs.generate import catalogue_countries, countries_from_places, run_generate
    from jobs.pipeline import prepared_grid
    from jobs.place import PlaceConfig, run_place
    from jobs.s3 import run_s3
    from jobs.synthesis import run_s7_s8
    from jobs.validate import run_s9
    from segment1b.contracts import path_for
    from segment1b.identity import RunIdentity
    from segment1b.storage import Storage

    prepared, prep = _prepared_root(workdir, params["grid"])
    ph = prep["parameter_hash"]
    digests: dict[int, dict[str, str]] = {}
    for n_workers in (1, 2):
        root = os.path.join(workdir, f"pipeline-{scale}-w{n_workers}")
        _fresh_root(prepared, root)
        storage = Storage(root)
        cluster, client = _cluster(n_workers)
        log = io.StringIO()
        try:
            eligible = catalogue_countries(storage, ph)  # as `segment1b run`: no zero-mass fallback countries
            gen = run_generate(storage, client, countries_from_places(eligible), scale=params["scale"], seed=SEED,
                               out=log, show=False)
            ident = RunIdentity(seed=SEED, manifest_fingerprint=gen["manifest_fingerprint"], parameter_hash=ph,
                                run_id=f"{n_workers:032x}")
            steps = [
                ("s0-s3", lambda: run_s3(storage, client, ident, countries_with_weights=set(eligible), out=log,
                                         show=False)),
                ("s4", lambda: run_place(storage, client, ident, prepared_grid(prep), prep["countries_sha256"],
                                         through="s4", config=PlaceConfig(), out=log)),
                # S4 is recomputed in memory to feed S5 (not rewritten): this step is S5 + S6 + that recompute
                ("s5-s6", lambda: run_place(storage, client, ident, prepared_grid(prep), prep["countries_sha256"],
                                            through="s6", config=PlaceConfig(), out=log)),
                ("s7-s8", lambda: run_s7_s8(storage, client, ident, out=log)),
                ("s9", lambda: run_s9(storage, client, SEED, ident.manifest_fingerprint, parameter_hash=ph,
                                      out=log)),
            ]
            workers = f"{n_workers} worker{'s' if n_workers > 1 else ''}"
            for name, fn in steps:
                if name == "s5-s6":
                    # S6 scaling without the disk: every unit's S4->S6 tasks, outputs dropped, nothing written
                    _s6_compute(bench, f"s6 compute (units only), {workers}",
                                "s6 compute (units only), 1 worker" if n_workers == 2 else None,
                                storage, client, ident, prep)
                label = f"{name}, {workers}"
                reset_worker_memory_peaks(client)
                with bench.step(label, baseline=(f"{name}, 1 worker" if n_workers == 2 else None)):
                    result = fn()
                bench.note_workers(label, worker_memory_peaks(client))
                if name == "s9" and not result.passed:
                    raise RuntimeError(f"S9 failed: {result.failed_codes}")
                if name == "s9":
                    plan = next(c for c in result.checks if c["check"] == "plan_recompute")["counts"]
                    bench.note(label, s4_pairs_recomputed=plan["pairs"], plans=plan["plans"],
                               countries=plan["countries"], weighted_tiles=sum(plan["weighted_tiles"].values()))
            sites = int(gen["summary"]["rows"])
            bench.note(f"s5-s6, {workers}", sites=sites, sites_per_s=round(sites / bench.steps[f"s5-s6, {workers}"].wall_s),
                       s4_to_s6_seconds=round(bench.steps[f"s4, {workers}"].wall_s + bench.steps[f"s5-s6, {workers}"].wall_s, 3))
            digests[n_workers] = {ds: storage.partition_digest(path_for(ds, **ident.tokens)) for ds in DATASETS}
            digests[n_workers]["site_locations"] = storage.partition_digest(
                path_for("site_locations", seed=SEED, manifest_fingerprint=ident.manifest_fingerprint))
        finally:
            client.close()
            cluster.close()
    same = digests[1] == digests[2]
    print(f"    datasets identical with 1 and 2 workers: {same}", file=bench.out)
    if not same:
        raise RuntimeError(f"datasets differ between 1 and 2 workers: {digests}")


def _s6_compute(bench, label, baseline, storage, client, ident, prep) -> None:
    """Time the S4->S6 unit tasks of ``run_place`` alone (no part writers, nothing written).

    The per-country weight prefixes are computed first, outside the timed step.  This isolates how the
    jitter scales with workers from the cost of writing ~700 bytes of JSON per RNG event to one disk, which
    both worker counts share.
    """
    from distributed import wait

    from jobs.pipeline import prepared_grid
    from jobs.place_tasks import country_prefix
    from jobs.requirement_pairs import part_reads, read_pairs
    from jobs.tiles import country_row_groups
    from jobs.units import plan_parts, plan_units
    from segment1b import rng
    from segment1b.contracts import path_for

    rel = path_for("s3_requirements", **ident.tokens)
    pairs = read_pairs(storage, rel)
    parts = plan_parts(pairs.merchant_id, pairs.n_sites)
    units = plan_units(pairs.merchant_id, pairs.country, pairs.n_sites, parts)
    del pairs
    ph = ident.parameter_hash
    wr, ir = country_row_groups(storage, "tile_weights", ph), country_row_groups(storage, "tile_index", ph)
    max_n = {}
    for u in units:
        for seg in u.segments:
            max_n[seg.country_iso] = max(max_n.get(seg.country_iso, 0), seg.max_n_sites)
    prefixes = {c: client.submit(country_prefix, storage, wr[c], ir.get(c, []), c, k, pure=False)
                for c, k in max_n.items()}
    reads = part_reads(storage, rel, parts)
    wait(list(prefixes.values()))
    master = rng.master_material(ident.seed, ident.manifest_fingerprint)
    with bench.step(label, baseline=baseline):
        futs = client.map(_sites_jittered, [[prefixes[c] for c in u.countries] for u in units],
                          [reads[u.part] for u in units], [u.segments for u in units], pure=False,
                          storage=storage,
                          countries_sha256=prep["countries_sha256"], grid=prepared_grid(prep), master=master,
                          parameter_hash=ph)
        sites = sum(client.gather(futs))
    bench.note(label, sites=sites, sites_per_s=round(sites / bench.steps[label].wall_s))
    client.cancel(list(prefixes.values()) + futs)


def _sites_jittered(prefixes, part, segments, **kwargs) -> int:
    from jobs.place_tasks import place_unit

    return sum(r.rows for r in place_unit(prefixes, part, segments, through="s6", **kwargs)["s6"])
