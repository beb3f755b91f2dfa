"""Peak memory per site of one S4 → S5 → S6 work unit (the basis of ``jobs.units.UNIT_BYTES_PER_SITE``).

Workload per scale: one country on the 30′ grid (252 tiles of a 9° × 7° box, unequal weights) and pairs
whose ``n_sites`` follow a heavy tail (1 .. 2 000, like the generator), summing to the named number of
sites.  The country is either all land (the box: every first jitter attempt is accepted) or an
archipelago (a 0.3° island around every tile centre: about 2.8 attempts per site, as many RNG events).

The unit runs the way a worker runs it: ``_s4_unit`` → ``_s5_unit`` → the body of ``_s6_unit`` (the
``jobs.place`` task functions; the prepared polygon is handed in instead of read from a data root), with
all three results kept alive as the worker keeps them until the part writers have fetched them, plus one
pickled copy of the S6 result (what the worker holds while sending it to the writer on another worker).

Measured two ways in this process: ``tracemalloc`` peak (NumPy and Python allocations) and the rise of
VmHWM (resident set, includes allocator slack).  The larger of the two, per site, is the figure.

Run: ``python -m benchmarks.run unit_memory --scale 500k`` (and ``--scale 500k-islands``); the result
sets ``jobs.units.UNIT_BYTES_PER_SITE`` (measured: 409 B/site land, up to 956 B/site archipelago).
"""

from __future__ import annotations

import gc
import pickle
import tracemalloc

import numpy as np

SCALES = {
    "500k": {"sites": 500_000, "shape": "land"},
    "500k-islands": {"sites": 500_000, "shape": "islands"},
    "100k": {"sites": 100_000, "shape": "land"},
    "1m": {"sites": 1_000_000, "shape": "land"},
}
SEED = 11


def _world(shape: str = "land"):
    import shapely

    from segment1b.grid import Grid

    grid = Grid.named("30m")
    rows = np.arange(int((grid.north - 50.0) / grid.dy), int((grid.north - 43.0) / grid.dy))
    cols = np.arange(int((-2.0 - grid.west) / grid.dx), int((7.0 - grid.west) / grid.dx))
    r, c = np.meshgrid(rows, cols, indexing="ij")
    tile_id = np.sort(grid.tile_id(r.ravel(), c.ravel()).astype(np.uint64))
    if shape == "land":
        geom = shapely.box(-2.0, 43.0, 7.0, 50.0)
    else:  # an island of 0.3 x 0.3 degrees around every tile centre: 36 % of each tile is land
        cx, cy = grid.centroid(tile_id)
        geom = shapely.union_all(shapely.box(cx - 0.15, cy - 0.15, cx + 0.15, cy + 0.15))
    shapely.prepare(geom)
    raw = np.random.default_rng(SEED).integers(1, 1000, len(tile_id))
    K = 10**8
    w = raw * K // raw.sum()
    w[: K - int(w.sum())] += 1
    return grid, geom, tile_id, w.astype(np.uint64)


def _pairs(sites: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    n = np.minimum((rng.pareto(1.5, size=sites) * 4).astype(np.int64) + 1, 2000)
    n = n[np.cumsum(n) <= sites]
    if n.sum() < sites:
        n = np.append(n, sites - n.sum())
    merchant = np.sort(rng.choice(2**62, size=len(n), replace=False).astype(np.uint64))
    return merchant, n


def run(bench, scale: str, params: dict, workdir: str = "bench-out") -> None:
    from segment1b import rng as srng
    from segment1b.s4_alloc_plan import weight_prefix
    from segment1b.s6_jitter import jitter_sites

    from benchmarks.harness import peak_rss_bytes, reset_peak_rss
    from jobs import place_tasks
    from jobs.units import UNIT_BYTES_PER_SITE

    grid, geom, tile_id, weight = _world(params["shape"])
    merchant, n_sites = _pairs(params["sites"])
    sites = int(n_sites.sum())
    master = srng.master_material(42, "ab" * 32)
    ph = "cd" * 32
    prefix = weight_prefix("FR", tile_id, weight, 8, int(n_sites.max()))

    def unit(m: np.ndarray, n: np.ndarray):
        # what place_tasks.s6_unit does, with the prepared geometry handed in instead of read from a data root
        s4 = place_tasks.s4_unit(prefix, m, n)
        s5 = place_tasks.s5_unit(s4, m, n, master, ph)
        out = jitter_sites(grid, "FR", geom, s5.merchant_id, s5.site_order, s5.tile_id, master, ph)
        s6 = place_tasks.S6Rows("FR", s5.merchant_id, s5.site_order, s5.tile_id, out["delta_lat_deg"],
                                out["delta_lon_deg"], out["attempts"], place_tasks.JitterEvents.of(out),
                                out["outside_pixel"], out["outside_country"])
        del out
        return s4, s5, s6, pickle.dumps(s6, protocol=5)

    unit(merchant[:10], n_sites[:10])  # warm up imports and caches: only the unit's own memory is measured
    gc.collect()

    label = f"S4->S6 unit, {sites:,} sites ({params['shape']})"
    reset_peak_rss()
    base_rss = peak_rss_bytes()
    tracemalloc.start()
    with bench.step(label):
        held = unit(merchant, n_sites)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_rise = peak_rss_bytes() - base_rss
    events = len(held[2].events.site)
    per_site = max(traced_peak, rss_rise) / sites
    bench.note(label, sites=sites, pairs=len(n_sites), s4_rows=held[0].rows, s6_events=events,
               tracemalloc_peak_mib=round(traced_peak / 2**20, 1), vmhwm_rise_mib=round(rss_rise / 2**20, 1),
               bytes_per_site_traced=round(traced_peak / sites), bytes_per_site_rss=round(rss_rise / sites),
               bytes_per_site=round(per_site), UNIT_BYTES_PER_SITE=UNIT_BYTES_PER_SITE)
    print(f"    measured {per_site:,.0f} bytes/site; jobs.units.UNIT_BYTES_PER_SITE = {UNIT_BYTES_PER_SITE:,}",
          file=bench.out)

    # For comparison: the S5 and S6 part writers holding this unit as a whole part (extra bytes per site on
    # top of their inputs).  Parts are a layout constant (jobs.units.DEFAULT_PART_SITES), so a worker must
    # hold its largest part writer whatever the units are.
    import os
    import shutil

    from segment1b.identity import RunIdentity
    from segment1b.storage import Storage

    root = os.path.join(workdir, "unit-memory")
    shutil.rmtree(root, ignore_errors=True)
    storage = Storage(root)
    ident = RunIdentity(seed=42, manifest_fingerprint="ab" * 32, parameter_hash=ph, run_id="0" * 32)
    s5, s6 = held[1], held[2]
    del held
    gc.collect()
    for kind, result in (("s5", s5), ("s6", s6)):
        label = f"{kind} part writer, {sites:,} sites ({params['shape']})"
        reset_peak_rss()
        base_rss = peak_rss_bytes()
        tracemalloc.start()
        with bench.step(label):
            place_tasks.write_part(kind, storage, {"data": f"{kind}/data/", "events": f"{kind}/events/"},
                                   "progress/", 0, ident, [{kind: [result]}])
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss_rise = peak_rss_bytes() - base_rss
        bench.note(label, bytes_per_site_traced=round(traced_peak / sites),
                   bytes_per_site_rss=round(rss_rise / sites))
    shutil.rmtree(root, ignore_errors=True)
