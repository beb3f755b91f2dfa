"""Land-share lattice of S1 (population proxy): cost and accuracy against exact shapely areas.

Workload per scale: the embedded Natural Earth countries on a named grid, S1's kernel (``tile_unit``) on
every work unit of the chosen countries, in this process (no Dask).  Steps:

- ``S1 kernel``: ``tile_unit`` without land shares (the baseline);
- ``S1 kernel, s=N``: ``tile_unit(..., land_samples=N)`` for N in 4, 8, 16;
- ``exact areas``: ``area(cell ∩ country) / area(cell)`` for the partial tiles (at most ``sample`` per
  unit), then per N: mean/p99/max absolute error of ``count / N²``, and the smallest exact share among
  the tiles the proxy keeps (estimate >= 0.25) with its per-site E613 probability ``(1 - f)**64``.

Run: ``python -m benchmarks.run land_share --scale 5m`` (all countries) or ``--scale 30s`` (15 coastal
countries; exact areas of the whole 30" coastline take too long for a routine check).
"""

from __future__ import annotations

import numpy as np

COASTAL = ("GR", "HR", "PH", "CU", "JP", "GB", "FJ", "NO", "CL", "ID", "DK", "MO", "MV", "BH", "SG")
SCALES = {
    "5m": {"grid": "5m", "countries": None, "sample": None},
    "30s": {"grid": "30s", "countries": COASTAL, "sample": 1500},
}
LATTICES = (4, 8, 16)
TAU = 0.25


def run(bench, scale: str, params: dict, workdir: str = "bench-out") -> None:
    import shapely

    from segment1b import refdata
    from segment1b import s1_tile_index as s1
    from segment1b.grid import Grid

    grid = Grid.named(params["grid"])
    polys = refdata.default_countries()
    geoms = dict(zip(polys.iso, polys.geometry))
    isos = params["countries"] or tuple(polys.iso)
    work = [(iso, u) for iso in isos for u in s1.plan_units([(iso, geoms[iso])], grid)]

    with bench.step("S1 kernel"):
        base = [s1.tile_unit(geoms[iso], grid, u) for iso, u in work]
    bench.note("S1 kernel", units=len(work), tiles=sum(r.n_tiles for r in base))
    shares = {}
    for s in LATTICES:
        label = f"S1 kernel, s={s}"
        with bench.step(label, baseline="S1 kernel"):
            shares[s] = [s1.tile_unit(geoms[iso], grid, u, land_samples=s) for iso, u in work]
        bench.note(label, boundary_tiles=sum(r.stats["land_tested"] for r in shares[s]),
                   partial_tiles=sum(r.stats["partial_tiles"] for r in shares[s]),
                   points=sum(r.stats["land_tested"] for r in shares[s]) * s * s)

    rng = np.random.default_rng(0)
    exact_parts, est_parts = [], {s: [] for s in LATTICES}
    with bench.step("exact areas"):
        for (iso, _), runs in zip(work, shares[max(LATTICES)]):
            idx = runs.land.index  # the finest lattice's partial tiles (a superset of the others')
            if params["sample"] and len(idx) > params["sample"]:
                idx = np.sort(rng.choice(idx, params["sample"], replace=False))
            if not len(idx):
                continue
            rows, cols = grid.row_col(runs.tile_ids(grid.ncols)[idx])
            boxes = shapely.box(grid.col_west(cols), grid.row_south(rows), grid.col_east(cols), grid.row_north(rows))
            exact_parts.append(shapely.area(shapely.intersection(boxes, geoms[iso])) / shapely.area(boxes))
            for s in LATTICES:
                est_parts[s].append(s1.land_share_counts(geoms[iso], grid, rows, cols, s) / float(s * s))
    exact = np.concatenate(exact_parts)
    bench.note("exact areas", tiles=len(exact), exact_below_tau=int((exact < TAU).sum()))
    for s in LATTICES:
        est = np.concatenate(est_parts[s])
        err = np.abs(est - exact)
        kept = est >= TAU
        worst = float(exact[kept].min()) if kept.any() else 1.0
        bench.note(f"S1 kernel, s={s}", mae=float(err.mean()), p99=float(np.quantile(err, 0.99)),
                   max_err=float(err.max()), min_exact_share_kept=worst, worst_e613_per_site=f"{(1 - worst) ** 64:.1e}",
                   kept_below_0_2=int((kept & (exact < 0.2)).sum()), dropped_above_0_3=int((~kept & (exact >= 0.3)).sum()))
