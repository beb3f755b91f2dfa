"""S1 + S2 (``segment1b prepare``) on the embedded world data: wall, peak worker RSS, tiles, agreement.

Workload per scale: the Natural Earth countries on a named world grid, basis ``population_proxy``,
dp 8, on a LocalCluster of ``workers`` x 1 thread with a 4 GiB memory limit each (the bar: 30" world in
<= 300 s, <= 4 GiB per worker).  Steps:

- ``prepare``: the whole job (plan, S1, S2, checks, publish, reports), cold (output folder removed first);
- ``independent check``: random cell centres in every country's bbox, GEOS point-in-polygon (``covers``,
  boundary counts as inside) against the *published* tile_index; prints the agreement;
- ``prepare, 1 worker`` (when ``check_workers``): the same job on one worker into another folder; the
  three partitions must have identical digests;
- ``naive point-in-polygon (DE, IT, JP)`` — the baseline — against ``s1 kernel (DE, IT, JP)``: the tiles
  of three countries in this process, once by testing every cell centre of each country's bounding box
  with GEOS (``shapely.intersects_xy`` on the prepared polygon), once with the S1 kernel (rasterio fill +
  exact refinement of the boundary cells); both must find the same tiles.

Run: ``python -m benchmarks.run prepare --scale 30s --workdir /work/bench-out``.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pyarrow.compute as pc

SCALES = {
    "5m": {"grid": "5m", "workers": 2, "sample": 400_000, "check_workers": True},
    "2.5m": {"grid": "2.5m", "workers": 2, "sample": 1_000_000, "check_workers": False},
    "30s": {"grid": "30s", "workers": 2, "sample": 2_000_000, "check_workers": False},
}
DATASETS = ("tile_index", "tile_bounds", "tile_weights")


def _cluster(n_workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=50,
        memory_limit="4GiB",
    )
    return cluster, Client(cluster)


def _published_ids(storage, ph: str) -> dict[str, np.ndarray]:
    """country_iso -> tile ids of the published tile_index (read part by part, two columns)."""
    from segment1b.contracts import path_for

    chunks: dict[str, list[np.ndarray]] = {}
    for part in storage.parquet_parts(path_for("tile_index", parameter_hash=ph)):
        t = storage.read_parquet(part, ["country_iso", "tile_id"])
        for iso in t.column("country_iso").unique().to_pylist():
            sel = t.filter(pc.equal(t.column("country_iso"), iso))
            chunks.setdefault(iso, []).append(sel.column("tile_id").to_numpy())
    return {iso: np.concatenate(v) for iso, v in chunks.items()}


def run(bench, scale: str, params: dict, workdir: str = "bench-out") -> None:
    import shapely

    from jobs.prepare import prepare
    from segment1b import refdata
    from segment1b.contracts import path_for
    from segment1b.grid import Grid
    from segment1b.s1_tile_index import sample_agreement
    from segment1b.storage import Storage

    root = os.path.join(workdir, f"prepare-{scale}")
    shutil.rmtree(root, ignore_errors=True)
    storage = Storage(root)
    refdata.default_countries()  # warm the cleaned-polygon cache outside the timed step
    cluster, client = _cluster(params["workers"])
    try:
        log = io.StringIO()
        with bench.step("prepare") as step:
            summary = prepare(storage, client, grid=params["grid"], out=log, show_progress=False)
        print("    " + log.getvalue().strip().replace("\n", "\n    "), file=bench.out)
        bench.note_workers("prepare", summary["peak_worker_rss_bytes"])
        bench.note(
            "prepare",
            tiles=int(summary["tiles"]),
            countries=int(summary["countries"]),
            units=int(summary["units"]),
            tiles_per_s=float(summary["tiles"] / step.wall_s),
        )
    finally:
        client.close()
        cluster.close()
    ph = summary["parameter_hash"]
    s1 = storage.read_json(f"control/tile_index/parameter_hash={ph}/s1_run_report.json")
    top = sorted(s1["countries"], key=lambda c: -c["rows"])[:5]
    print(
        "    largest: "
        + ", ".join(f"{c['country_iso']} {c['rows']:,} tiles ({c['units']} units)" for c in top),
        file=bench.out,
    )

    with bench.step("independent check"):
        grid = Grid.named(params["grid"])
        countries = refdata.default_countries()
        ids = _published_ids(storage, ph)
        # sample size per country proportional to its bbox cells (at least 200)
        bbox = shapely.bounds(countries.geometry)
        cells = ((bbox[:, 2] - bbox[:, 0]) / grid.dx + 2) * ((bbox[:, 3] - bbox[:, 1]) / grid.dy + 2)
        n_c = np.maximum(200, (params["sample"] * cells / cells.sum()).astype(int))
        totals = {"sampled": 0, "agree": 0, "in_index": 0, "in_polygon": 0, "on_boundary": 0}
        bad = []
        for k, (iso, geom) in enumerate(zip(countries.iso, countries.geometry)):
            shapely.prepare(geom)
            res = sample_agreement(geom, grid, ids.get(iso, np.zeros(0, np.uint64)), int(n_c[k]), seed=k)
            for key in totals:
                totals[key] += res[key]
            if res["mismatches"]:
                bad.append((iso, res["mismatches"][:5]))
    agreement = totals["agree"] / max(totals["sampled"], 1)
    bench.note(
        "independent check",
        sampled=totals["sampled"],
        in_polygon=totals["in_polygon"],
        on_boundary=totals["on_boundary"],
        agreement_pct=100.0 * agreement,
    )
    if bad:
        print(f"    mismatches: {bad[:10]}", file=bench.out)

    _kernel_vs_naive(bench, params["grid"])

    if params.get("check_workers"):
        root1 = os.path.join(workdir, f"prepare-{scale}-1worker")
        shutil.rmtree(root1, ignore_errors=True)
        storage1 = Storage(root1)
        cluster, client = _cluster(1)
        try:
            with bench.step("prepare, 1 worker", baseline="prepare"):
                prepare(storage1, client, grid=params["grid"], out=io.StringIO(), show_progress=False)
        finally:
            client.close()
            cluster.close()
        same = all(
            storage.partition_digest(path_for(d, parameter_hash=ph))
            == storage1.partition_digest(path_for(d, parameter_hash=ph))
            for d in DATASETS
        )
        bench.note("prepare, 1 worker", identical_bytes_1_vs_2_workers=str(same))
        shutil.rmtree(root1, ignore_errors=True)


BASELINE_COUNTRIES = ("DE", "IT", "JP")


def _kernel_vs_naive(bench, grid_name: str) -> None:
    """S1 kernel against the obvious per-cell point-in-polygon on the same countries (same process)."""
    import shapely

    from segment1b import refdata
    from segment1b.grid import Grid
    from segment1b.s1_tile_index import plan_units, runs_to_cells, tile_unit

    grid = Grid.named(grid_name)
    countries = refdata.default_countries()
    geoms = {iso: countries.get(iso) for iso in BASELINE_COUNTRIES}
    naive: dict[str, np.ndarray] = {}
    with bench.step("naive point-in-polygon (DE, IT, JP)"):
        for iso, geom in geoms.items():
            shapely.prepare(geom)
            w, s, e, n = shapely.bounds(geom)
            c0, c1 = int((w - grid.west) / grid.dx), int((e - grid.west) / grid.dx) + 1
            r0, r1 = int((grid.north - n) / grid.dy), int((grid.north - s) / grid.dy) + 1
            found = []
            for r in range(r0, min(r1, grid.nrows)):  # one grid row at a time keeps memory small
                cols = np.arange(c0, min(c1, grid.ncols))
                hit = shapely.intersects_xy(geom, grid.col_center(cols), np.full(len(cols), grid.row_center(r)))
                found.append(grid.tile_id(np.full(int(hit.sum()), r), cols[hit]))
            naive[iso] = np.concatenate(found)
    kernel: dict[str, np.ndarray] = {}
    with bench.step("s1 kernel (DE, IT, JP)", baseline="naive point-in-polygon (DE, IT, JP)"):
        for unit in plan_units(list(geoms.items()), grid):
            rows, cols = runs_to_cells(tile_unit(geoms[unit.country_iso], grid, unit))
            kernel.setdefault(unit.country_iso, []).append(grid.tile_id(rows, cols))
        kernel = {iso: np.concatenate(v) for iso, v in kernel.items()}
    same = all(np.array_equal(np.sort(naive[i]), np.sort(kernel[i])) for i in BASELINE_COUNTRIES)
    bench.note("s1 kernel (DE, IT, JP)", tiles=int(sum(len(v) for v in kernel.values())), same_tiles=str(same))
    if not same:
        raise RuntimeError("S1 kernel and naive point-in-polygon disagree")
