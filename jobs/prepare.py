"""``segment1b prepare``: S1 tile index and S2 tile weights as one Dask job.

Plan (on the client): resolve the grid, the country polygons and the population source, hence
``parameter_hash``; cut every country into work units (country, band of rows, column windows) of at most
``unit_cells`` cells.  The layout (unit -> part number) depends only on the grid, the polygons and that
constant, so the bytes are the same whatever the number of workers.

Run (on the cluster):

- ``s1-tiles-<ISO>-<band>`` per unit: exact centre-rule tiles, writes the unit's tile_index and
  tile_bounds parts into the staging folders and keeps what S2 needs (runs, raster or proxy masses and,
  for the proxy, the land shares of the unit's coastal/border tiles);
- ``s1-meta-<ISO>-<band>``: the unit's runs and counters, gathered by the client for the cross-country
  duplicate check (E003) and the report (small: proportional to perimeter);
- ``s2-weights-<ISO>`` per country: masses, exact largest remainder, tile_weights parts (same part
  numbers as S1).

Then the client checks E003/E103, publishes the three partitions (nothing is published when a check
fails; the staging folders are removed) and writes the S1 and S2 run reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import shapely

from segment1b import refdata
from segment1b.contracts import path_for, report_path
from segment1b.errors import InputError, IntegrityError
from segment1b.grid import Grid, NAMED_GRIDS
from segment1b.identity import WEIGHT_BASES, SegmentParameters, utc_now
from segment1b.s1_tile_index import (
    DEFAULT_UNIT_CELLS,
    Runs,
    Unit,
    find_duplicate_tiles,
    plan_units,
    runs_to_cells,
    tile_bounds_table,
    tile_index_table,
    tile_unit,
)
from segment1b.s2_tile_weights import (
    ProxyParams,
    country_weights,
    land_area_total,
    proxy_kernel_mass,
    proxy_masses_inplace,
    raster_masses,
    weights_table,
)
from segment1b.lease import Lease, sweep_when_idle
from segment1b.storage import StagedFile, Storage, canonical_json, part_name, write_parquet_bytes
from segment1b.contracts import dataset as dataset_spec

from .footprint import check_memory, prepare_needs
from .runtime import StateReport, gather, has_receipt, publish, task_key, timed, token_of, write_run_report

__all__ = ["prepare", "register", "resolve_inputs", "ResolvedInputs", "PARQUET_ENCODINGS",
           "DATASETS"]

DATASETS = ("tile_index", "tile_bounds", "tile_weights")
# Per-column Parquet encodings, measured on a Russian 30" unit (7.1 M rows; benchmarks/bench_prepare.py
# prints the write rates): sorted ids DELTA_BINARY_PACKED (5x faster than dictionary, 100x smaller),
# longitudes BYTE_STREAM_SPLIT (2x faster, 13x smaller), per-row constants and the constant strings PLAIN
# (zstd squeezes their runs; dictionary hashing costs more than it saves).
_S = {"country_iso": "PLAIN", "tile_id": "DELTA_BINARY_PACKED"}
PARQUET_ENCODINGS: dict[str, dict[str, str]] = {
    "tile_index": {
        **_S,
        "inclusion_rule": "PLAIN",
        "raster_row": "PLAIN",
        "raster_col": "DELTA_BINARY_PACKED",
        "centroid_lon": "BYTE_STREAM_SPLIT",
        "centroid_lat": "PLAIN",
        "pixel_area_m2": "PLAIN",
    },
    "tile_bounds": {
        **_S,
        "west_lon": "BYTE_STREAM_SPLIT",
        "east_lon": "BYTE_STREAM_SPLIT",
        "south_lat": "PLAIN",
        "north_lat": "PLAIN",
    },
    "tile_weights": {**_S, "weight_fp": "DELTA_BINARY_PACKED", "dp": "PLAIN", "zero_mass_fallback": "PLAIN"},
}
ROW_GROUP_ROWS = 1 << 20
S2_PRIORITY = 1 << 50  # run a country's S2 as soon as its units are done (frees their results early)


# -- recipes shipped to workers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """Everything a task needs besides its unit: a picklable recipe (paths and options, no resources)."""

    storage: Storage
    grid: Grid
    staging: dict[str, str]
    basis: str
    dp: int
    raster: str | None = None
    proxy: ProxyParams | None = None
    rule: str = "center"


@dataclass(frozen=True)
class CountryInput:
    """One country's polygon (WKB) and towns (for the proxy), scattered once per country."""

    wkb: bytes = field(repr=False)
    lon: np.ndarray = field(repr=False)
    lat: np.ndarray = field(repr=False)
    pop: np.ndarray = field(repr=False)

    @property
    def town_total(self) -> float:
        return math.fsum(self.pop.tolist())


def _write(job: Job, dataset_id: str, part: int, table) -> StagedFile:
    data = write_parquet_bytes(
        table,
        dataset_spec(dataset_id),
        row_group_rows=ROW_GROUP_ROWS,
        encodings=PARQUET_ENCODINGS[dataset_id],
    )
    return job.storage.write_part(job.staging[dataset_id], part_name(part), data)


def _read_raster_windows(path: str, unit: Unit) -> tuple[list[tuple[int, np.ndarray]], float | None]:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        out = [
            (c0, src.read(1, window=Window(c0, unit.row0, c1 - c0, unit.row1 - unit.row0)))
            for c0, c1 in unit.windows
        ]
        return out, src.nodata


@timed
def s1_unit_task(job: Job, unit: Unit, country: CountryInput) -> dict[str, Any]:
    """S1 for one unit: tiles, tile_index + tile_bounds parts, and the mass inputs of S2."""
    geom = shapely.from_wkb(country.wkb)
    # the proxy weights tiles by their land share (docs/population-proxy.md); other bases do not need it
    land_samples = job.proxy.land_samples if job.basis == "population_proxy" else 0
    runs = tile_unit(geom, job.grid, unit, rule=job.rule, land_samples=land_samples)
    n = runs.n_tiles
    files: dict[str, StagedFile] = {}  # what this unit wrote, for the publish check
    mass: Any = None
    if n:
        cells = runs_to_cells(runs)
        table = tile_index_table(unit.country_iso, runs, job.grid, job.rule, cells=cells)
        ids = table.column("tile_id").to_numpy()
        files["tile_index"] = _write(job, "tile_index", unit.part, table)
        del table
        files["tile_bounds"] = _write(
            job, "tile_bounds", unit.part, tile_bounds_table(unit.country_iso, runs, job.grid, cells=cells)
        )
        if job.basis == "population":
            windows, nodata = _read_raster_windows(job.raster, unit)
            mass = raster_masses(cells[0], cells[1], unit.row0, windows, nodata)
        elif job.basis == "population_proxy":
            mass = proxy_kernel_mass(
                ids, job.grid, country.lon, country.lat, country.pop, job.proxy, unit.row0, unit.row1
            )
    return {
        "country_iso": unit.country_iso,
        "band": unit.band,
        "part": unit.part,
        "rows": n,
        "runs": runs,
        "mass": mass,
        "bytes": sum(f.size for f in files.values()),
        "files": files,
        **runs.stats,
    }


def s1_meta(result: dict[str, Any]) -> dict[str, Any]:
    """The small part of an S1 result that the client gathers (runs and counters, no masses or land shares)."""
    out = {k: v for k, v in result.items() if k != "mass"}
    out["runs"] = dataclasses.replace(result["runs"], land=None)
    return out


@timed
def s2_country_task(
    job: Job, iso: str, town_total: float, units: list[Unit], *results: dict
) -> dict[str, Any]:
    """S2 for one country: masses over all its units, exact weights, tile_weights parts."""
    grid = job.grid
    runs: list[Runs] = [r["runs"] for r in results]
    counts = [r["rows"] for r in results]
    n = int(sum(counts))
    if n == 0:
        return {"country_iso": iso, "rows": 0, "mass": 0.0, "zero_mass_fallback": False, "bytes": 0, "files": []}
    row = np.concatenate([r.row for r in runs]).astype(np.int64)
    run_len = np.concatenate([r.col1.astype(np.int64) - r.col0 for r in runs])
    land_stats: dict[str, Any] = {}
    if job.basis == "uniform":
        masses = np.ones(n, dtype=np.float64)
    elif job.basis == "population":
        masses = np.concatenate([r["mass"] for r in results if r["rows"]])
    else:
        masses = np.repeat(grid.row_area_m2[row], run_len)
        if job.basis == "population_proxy":
            offsets = np.cumsum([0] + counts)
            k_idx = np.concatenate([r["mass"][0] + off for r, off in zip(results, offsets[:-1]) if r["rows"]])
            k_val = np.concatenate([r["mass"][1] for r in results if r["rows"]])
            l_idx, l_inside, a_c = _land_shares(runs, offsets, row, run_len, grid, job.proxy.land_samples)
            share = l_inside.astype(np.float64) / float(job.proxy.land_samples**2)
            masses = proxy_masses_inplace(masses, k_idx, k_val, town_total, a_c, job.proxy, l_idx, share)
            land_stats = {
                "land_area_m2": a_c,
                "partial_tiles": int(len(l_idx)),
                "tiles_below_min_land_share": int((share < job.proxy.min_land_share).sum()),
            }

    def all_ids() -> np.ndarray:
        return np.concatenate([r.tile_ids(grid.ncols) for r in runs])

    weights, fallback, (num, e) = country_weights(masses, all_ids, job.dp, iso)
    mass_total = 0.0 if fallback else math.ldexp(num, e) if num.bit_length() + e < 1024 else math.inf
    del masses
    files = []
    start = 0
    for result, r in zip(results, runs):
        if not result["rows"]:
            continue
        stop = start + result["rows"]
        table = weights_table(iso, r.tile_ids(grid.ncols), weights[start:stop], job.dp, fallback)
        files.append(_write(job, "tile_weights", result["part"], table))
        start = stop
    return {
        "country_iso": iso,
        "rows": n,
        "mass": mass_total,
        "zero_mass_fallback": fallback,
        "bytes": sum(f.size for f in files),
        "files": files,
        "weight_sum": int(weights.sum(dtype=np.uint64)),
        "weighted_tiles": int(np.count_nonzero(weights)),  # what S9's plan recomputation holds (jobs.footprint)
        **land_stats,
    }


def _land_shares(
    runs: list[Runs], offsets: np.ndarray, row: np.ndarray, run_len: np.ndarray, grid: Grid, samples: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """A country's partial tiles (index among its tiles, lattice count) and its land area ``A_c``.

    ``row``/``run_len`` are the country's runs concatenated in part order (the tile order).  The land
    area is summed per row from integers (:func:`land_area_total`), so it does not depend on the units.
    """
    parts = [(r.land, off) for r, off in zip(runs, offsets[:-1]) if r.land is not None and len(r.land.index)]
    idx = np.concatenate([land.index + off for land, off in parts]) if parts else np.zeros(0, np.int64)
    inside = np.concatenate([land.inside for land, _ in parts]) if parts else np.zeros(0, np.uint16)
    r0 = int(row.min())
    per_row = np.bincount(row - r0, weights=run_len)
    tile_row = row[np.searchsorted(np.cumsum(run_len), idx, side="right")]
    deficit = np.bincount(
        tile_row - r0, weights=samples * samples - inside.astype(np.int64), minlength=len(per_row)
    )
    present = np.flatnonzero(per_row)
    a_c = land_area_total(per_row[present], grid.row_area_m2[present + r0], deficit[present], samples)
    return idx, inside, a_c


# -- resolving inputs ----------------------------------------------------------------------------------


def resolve_grid(grid: str | Grid | None, raster: str | None) -> Grid:
    """The grid: from the raster when given (a named grid must then match it: E002), else the named grid."""
    named = Grid.named(grid) if isinstance(grid, str) else grid
    if raster is None:
        if named is None:
            raise InputError(
                "E002_RASTER_MISMATCH",
                f"no grid: give a named grid ({sorted(NAMED_GRIDS)}) or a population raster",
            )
        return named
    from_raster = Grid.from_geotiff(raster)
    if named is not None:
        tol = 1e-9 * named.dx
        same = (
            named.shape == from_raster.shape
            and abs(named.west - from_raster.west) <= tol
            and abs(named.north - from_raster.north) <= tol
            and abs(named.dx - from_raster.dx) <= tol
            and abs(named.dy - from_raster.dy) <= tol
        )
        if not same:
            raise InputError(
                "E002_RASTER_MISMATCH",
                "the population raster's grid differs from the requested grid",
                path=raster,
                rows=[
                    {"source": "grid " + named.name, **_grid_row(named)},
                    {"source": "raster", **_grid_row(from_raster)},
                ],
                hint="omit --grid: the raster defines the grid",
            )
    return from_raster


def _grid_row(g: Grid) -> dict:
    return {"west": g.west, "north": g.north, "dx": g.dx, "dy": g.dy, "ncols": g.ncols, "nrows": g.nrows}


def _country_inputs(countries: refdata.Countries, places: refdata.Places | None) -> dict[str, CountryInput]:
    empty = np.zeros(0, dtype=np.float64)
    by_iso = {}
    if places is not None:
        frame = places.frame
        for iso, grp in frame.groupby("country_iso", sort=True):
            by_iso[iso] = (
                grp["lon"].to_numpy(np.float64),
                grp["lat"].to_numpy(np.float64),
                grp["population"].to_numpy(np.float64),
            )
    return {
        iso: CountryInput(shapely.to_wkb(g), *by_iso.get(iso, (empty, empty, empty)))
        for iso, g in zip(countries.iso, countries.geometry)
    }


def _cleanup(storage: Storage, staging: dict[str, str]) -> None:
    for rel in staging.values():
        storage.discard(rel)  # best effort: never hides the failure being cleaned up after


# -- the job -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedInputs:
    """What prepare works from: the grid, the polygons, the population source and the parameters."""

    grid: Grid
    polys: refdata.Countries
    places: refdata.Places | None
    proxy: ProxyParams | None
    basis: str
    params: SegmentParameters


def resolve_inputs(*, grid: str | Grid | None = None, countries: str | None = None, raster: str | None = None,
                   basis: str | None = None, dp: int = 8, iso_column: str | None = None) -> ResolvedInputs:
    """Resolve prepare's inputs and their ``parameter_hash`` (reads the inputs; writes nothing).

    ``segment1b run`` uses it to find out, before anything is written, whether a run is already complete.

    Raises
    ------
    Segment1BError
        E001-E009 for unreadable or invalid inputs, E105 for an unknown basis, E104 for dp.
    """
    the_grid = resolve_grid(grid, raster)
    basis = basis or ("population" if raster else "population_proxy")
    if basis not in WEIGHT_BASES:
        raise InputError(
            "E105_NORMALIZATION", f"weight basis {basis!r} unknown; choose one of {WEIGHT_BASES}"
        )
    if basis == "population" and raster is None:
        raise InputError(
            "E002_RASTER_MISMATCH",
            "basis 'population' needs a population raster (--raster)",
            hint="give --raster pop.tif, or use --basis population_proxy",
        )
    polys = refdata.load_countries(countries, iso_column) if countries else refdata.default_countries()
    places = refdata.default_places() if basis == "population_proxy" else None
    proxy = ProxyParams() if basis == "population_proxy" else None
    population_sha = (
        places.sha256 if places is not None else refdata.file_sha256(raster) if basis == "population" else ""
    )
    params = SegmentParameters(
        grid=the_grid.to_params(),
        countries_sha256=polys.sha256,
        basis=basis,
        dp=dp,
        population_sha256=population_sha,
        proxy=proxy.canonical() if proxy else {},
    )
    return ResolvedInputs(the_grid, polys, places, proxy, basis, params)


def prepare(
    storage: Storage,
    client,
    *,
    grid: str | Grid | None = None,
    countries: str | None = None,
    raster: str | None = None,
    basis: str | None = None,
    dp: int = 8,
    iso_column: str | None = None,
    require: Sequence[str] | None = None,
    unit_cells: int = DEFAULT_UNIT_CELLS,
    out=None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Build and publish tile_index, tile_bounds and tile_weights for one parameter set.

    Parameters
    ----------
    storage : Storage
        Data root.
    client : distributed.Client
    grid : str or Grid, optional
        Named grid (``30s``, ``2.5m``, ``5m``...); optional when ``raster`` is given (it defines the grid).
    countries : str, optional
        Country polygon file (GeoParquet/GeoPackage/Shapefile); default the embedded Natural Earth data.
    raster : str, optional
        Population GeoTIFF (lon/lat); enables basis ``population`` (the default then).
    basis : str, optional
        One of ``uniform``, ``area_m2``, ``population``, ``population_proxy`` (default without raster).
    dp : int
        Decimal places of weight_fp (K = 10**dp).
    iso_column : str, optional
        ISO column of ``countries``.
    require : sequence of str, optional
        Countries that must get tiles (E103_ZERO_COUNTRY otherwise), e.g. those of an outlet catalogue.
    unit_cells : int
        Cell budget per work unit (layout constant: changing it changes part boundaries, not rows).
    out : file, optional
        Where to print progress and the summary (default stdout).

    Returns
    -------
    dict with ``parameter_hash``, ``paths`` (dataset -> partition), ``reports``, ``countries``, ``tiles``,
    ``seconds``, ``skipped`` (True when everything was already published).

    Raises
    ------
    Segment1BError
        E001-E008 (inputs, S1), E101-E106 (S2); nothing is published then.
    """
    out = out if out is not None else sys.stdout
    t_start = time.perf_counter()
    resolved = resolve_inputs(grid=grid, countries=countries, raster=raster, basis=basis, dp=dp,
                              iso_column=iso_column)
    the_grid, polys, places, proxy, basis, params = (resolved.grid, resolved.polys, resolved.places, resolved.proxy,
                                                     resolved.basis, resolved.params)
    ph = params.parameter_hash
    targets = {ds: path_for(ds, parameter_hash=ph) for ds in DATASETS}
    reports = {s: report_path(s, parameter_hash=ph) for s in ("s1", "s2")}
    summary: dict[str, Any] = {
        "parameter_hash": ph,
        "paths": {d: storage.url(p) for d, p in targets.items()},
        "reports": {s: storage.url(p) for s, p in reports.items()},
        "grid": the_grid.name,
        "basis": basis,
        "dp": dp,
    }
    summary["grid_params"] = the_grid.to_params()
    summary["countries_sha256"] = polys.sha256
    publish_reference(storage, polys, params)
    scope = path_for("lease_tiles", parameter_hash=ph)
    if _surfaces_finished(storage, targets, ph):
        sweep_when_idle(storage, scope, *targets.values())  # staging left by a killed run, if any
        return _already_published(summary, t_start, out)
    # one run publishes a parameter_hash at a time: the others wait here, then find it published (issue 14)
    with storage.lease(scope, out=out) as lease:
        if _surfaces_finished(storage, targets, ph):
            return _already_published(summary, t_start, out)
        lease.sweep(*targets.values())  # staging of dead attempts: under the lease nobody else is alive
        return _prepare_leased(storage, client, lease, the_grid=the_grid, polys=polys, places=places, proxy=proxy,
                               params=params, basis=basis, dp=dp, raster=raster, require=require,
                               unit_cells=unit_cells, targets=targets, summary=summary,
                               population_sha=params.population_sha256, t_start=t_start, out=out,
                               show_progress=show_progress)


def _surfaces_finished(storage: Storage, targets: dict[str, str], ph: str) -> bool:
    """Published *and* reported: S9 checks the surfaces against the S1/S2 receipts (issue 14), so a prepare
    killed between publishing and reporting is finished again (same bytes: the publish is a no-op)."""
    reported = {"tile_index": "s1", "tile_bounds": "s1", "tile_weights": "s2"}
    return all(storage.is_published(t) and has_receipt(storage, reported[ds], {"parameter_hash": ph}, t)
               for ds, t in targets.items())


def _already_published(summary: dict[str, Any], t_start: float, out) -> dict[str, Any]:
    print(f"prepare: tile_index, tile_bounds and tile_weights are already published for {summary['parameter_hash']}; "
          "nothing to do", file=out)
    summary.update({"skipped": True, "seconds": time.perf_counter() - t_start})
    return summary


def _prepare_leased(storage: Storage, client, lease: Lease, *, the_grid: Grid, polys: refdata.Countries, places,
                    proxy: ProxyParams | None, params: SegmentParameters, basis: str, dp: int, raster: str | None,
                    require: Sequence[str] | None, unit_cells: int, targets: dict[str, str], summary: dict[str, Any],
                    population_sha: str, t_start: float, out, show_progress: bool) -> dict[str, Any]:
    """S1 and S2 on the cluster, then the checks and the publication, under the lease of the parameter_hash."""
    ph = params.parameter_hash
    # this attempt's staging folders: no other run writes into them or removes them
    staging = {ds: lease.staging_path(targets[ds]) for ds in DATASETS}
    inputs = _country_inputs(polys, places)
    units = plan_units(list(zip(polys.iso, polys.geometry)), the_grid, unit_cells)
    _ = the_grid.row_area_m2  # computed once here; shipped with the grid to every task
    job = Job(storage, the_grid, staging, basis, dp, raster, proxy)
    tok = token_of(ph, storage.root_url, unit_cells, lease.attempt)  # keys of this attempt only
    print(
        f"prepare: grid {the_grid.name} {the_grid.nrows}x{the_grid.ncols}, {len(polys)} countries, "
        f"{len(units)} units, basis {basis}, dp {dp}, parameter_hash {ph[:16]}...",
        file=out,
    )
    # units are a layout constant: a worker that cannot hold the largest would pause for good (issue #14)
    check_memory(client, prepare_needs(units), step=f"prepare on the {the_grid.name} grid")
    from cluster import reset_worker_memory_peaks, worker_memory_peaks

    reset_worker_memory_peaks(client)
    t_run = time.perf_counter()
    started = utc_now()
    try:
        country_futs = {
            iso: f for iso, f in zip(inputs, client.scatter([inputs[i] for i in inputs], hash=False))
        }
        s1_futs: dict[str, Any] = {}
        meta_futs: dict[str, Any] = {}
        by_country: dict[str, list[tuple[Unit, Any]]] = {}
        country_cells: dict[str, int] = {}
        for u in units:
            country_cells[u.country_iso] = country_cells.get(u.country_iso, 0) + u.cells
        for u in units:
            # largest country first, so its (longest) S2 task can start while the small ones still run
            key = task_key("s1", "tiles", u.country_iso, u.band, tok)
            fut = client.submit(
                s1_unit_task,
                job,
                u,
                country_futs[u.country_iso],
                key=key,
                priority=country_cells[u.country_iso],
                pure=False,
            )
            s1_futs[key] = fut
            meta_futs[key] = client.submit(
                s1_meta,
                fut,
                key=task_key("s1", "meta", u.country_iso, u.band, tok),
                priority=S2_PRIORITY,
                pure=False,
            )
            by_country.setdefault(u.country_iso, []).append((u, fut))
        s2_futs = {}
        for iso, pairs in by_country.items():
            key = task_key("s2", "weights", iso, token=tok)
            s2_futs[key] = client.submit(
                s2_country_task,
                job,
                iso,
                inputs[iso].town_total,
                [u for u, _ in pairs],
                *[f for _, f in pairs],
                key=key,
                priority=S2_PRIORITY,
                pure=False,
            )
        del s1_futs, by_country  # S1 results are released once their S2 task is done
        meta = gather(client, meta_futs, "s1 tile index", out, show=show_progress)
        t_s1 = time.perf_counter() - t_run
        s2 = gather(client, s2_futs, "s2 tile weights", out, show=show_progress)
        t_s2 = time.perf_counter() - t_run
        s1_results = [meta[k] for k in sorted(meta, key=lambda k: meta[k]["part"])]
        dups = find_duplicate_tiles(
            [r["country_iso"] for r in s1_results], [r["runs"] for r in s1_results], the_grid.ncols
        )
        if dups:
            raise IntegrityError(
                "E003_DUP_TILE",
                f"{len(dups)}+ tiles are claimed by two countries (overlapping "
                "polygons, or a cell centre exactly on a shared border)",
                dataset="tile_index",
                rows=dups,
                hint="fix the overlap in the country polygons",
            )
        tiles_by_country: dict[str, int] = {}
        for r in s1_results:
            tiles_by_country[r["country_iso"]] = tiles_by_country.get(r["country_iso"], 0) + r["rows"]
        missing = sorted(c for c in (require or ()) if tiles_by_country.get(c, 0) == 0)
        if missing:
            raise InputError(
                "E103_ZERO_COUNTRY",
                f"{len(missing)} required countries have no tile at grid {the_grid.name}",
                dataset="tile_index",
                rows=[{"country_iso": c, "in_polygons": c in polys.iso} for c in missing],
                hint="use a finer grid, or add the countries' polygons",
            )
        written = {"tile_index": [r["files"]["tile_index"] for r in s1_results if r["files"]],
                   "tile_bounds": [r["files"]["tile_bounds"] for r in s1_results if r["files"]],
                   "tile_weights": [f for r in s2.values() for f in r["files"]]}
        receipts = {ds: publish(storage, ds, staging[ds], expected=written[ds], parameter_hash=ph) for ds in DATASETS}
    except BaseException:
        _cleanup(storage, staging)
        raise
    peaks = worker_memory_peaks(client)
    n_workers = len(client.scheduler_info().get("workers", {}))
    total_tiles = sum(r["rows"] for r in s1_results)
    identity = {"parameter_hash": ph, "parameters": params.canonical()}
    s1_countries = _country_rows(
        s1_results,
        ("rows", "cells", "boundary_cells", "refined", "n_runs", "bytes")
        + (("land_tested", "partial_tiles") if basis == "population_proxy" else ()),
    )
    zero_tile = sorted(set(polys.iso) - {c for c, n in tiles_by_country.items() if n})
    s1_report = StateReport(
        "s1",
        "tile_index",
        identity,
        rows=total_tiles,
        receipts=[receipts["tile_index"], receipts["tile_bounds"]],
        wall_seconds=t_s1,
        task_cpu_seconds=sum(r.get("_cpu_s", 0.0) for r in s1_results),
        workers=n_workers,
        peak_worker_rss_bytes=peaks,
        countries=s1_countries,
        started_utc=started,
        extra={
            "grid": the_grid.to_params(),
            "inclusion_rule": "center",
            "units": len(units),
            "unit_cells": unit_cells,
            "countries_total": len(polys),
            "countries_with_tiles": len(polys) - len(zero_tile),
            "countries_without_tiles": zero_tile,
            "duplicate_tiles": 0,
            "cells_rasterised": int(sum(r["cells"] for r in s1_results)),
            "boundary_cells_exact": int(sum(r["boundary_cells"] for r in s1_results)),
            "land_share_tiles_tested": int(sum(r.get("land_tested", 0) for r in s1_results)),
            "land_share_partial_tiles": int(sum(r.get("partial_tiles", 0) for r in s1_results)),
            "countries_source": polys.source,
            "countries_sha256": polys.sha256,
            "countries_cleaning": polys.cleaning,
            "peak_worker_rss_note": "S1 and S2 run concurrently; peaks cover both",
        },
    )
    s2_rows = sorted(s2.values(), key=lambda r: r["country_iso"])
    s2_report = StateReport(
        "s2",
        "tile_weights",
        identity,
        rows=sum(r["rows"] for r in s2_rows),
        receipts=[receipts["tile_weights"]],
        wall_seconds=t_s2,
        task_cpu_seconds=sum(r.get("_cpu_s", 0.0) for r in s2_rows),
        workers=n_workers,
        peak_worker_rss_bytes=peaks,
        countries=[
            {
                "country_iso": r["country_iso"],
                "rows": r["rows"],
                "mass": r["mass"],
                "weight_sum": r.get("weight_sum", 0),
                "weighted_tiles": r["weighted_tiles"],
                "zero_mass_fallback": r["zero_mass_fallback"],
                **{k: r[k] for k in ("land_area_m2", "partial_tiles", "tiles_below_min_land_share") if k in r},
                "seconds": round(r.get("_wall_s", 0.0), 4),
            }
            for r in s2_rows
            if r["rows"]
        ],
        started_utc=started,
        extra={
            "basis": basis,
            "dp": dp,
            "K": 10**dp,
            "population_sha256": params.population_sha256,
            "proxy": params.proxy,
            "places_dropped": places.dropped if places is not None else {},
            "zero_mass_fallback_countries": [r["country_iso"] for r in s2_rows if r["zero_mass_fallback"]],
            "tiles_below_min_land_share": int(sum(r.get("tiles_below_min_land_share", 0) for r in s2_rows)),
        },
    )
    write_run_report(storage, s1_report, parameter_hash=ph)
    write_run_report(storage, s2_report, parameter_hash=ph)
    seconds = time.perf_counter() - t_start
    summary.update(
        {
            "skipped": False,
            "countries": len(polys) - len(zero_tile),
            "tiles": total_tiles,
            "units": len(units),
            "seconds": seconds,
            "receipts": receipts,
            "peak_worker_rss_bytes": peaks,
            "countries_without_tiles": zero_tile,
        }
    )
    print(
        f"prepare: {summary['countries']} countries, {total_tiles:,} tiles in {seconds:.1f} s "
        f"(S1 {t_s1:.1f} s, S2 {t_s2:.1f} s); peak worker RSS "
        f"{max(peaks.values(), default=0) / 2**20:.0f} MiB\n"
        f"  parameter_hash {ph}\n"
        + "".join(f"  {d:<13}{summary['paths'][d]}\n" for d in DATASETS)
        + "".join(f"  {s} report    {summary['reports'][s]}\n" for s in ("s1", "s2")),
        end="",
        file=out,
    )
    return summary


def _country_rows(results: list[dict], fields: tuple[str, ...]) -> list[dict]:
    by: dict[str, dict] = {}
    for r in results:
        row = by.setdefault(
            r["country_iso"],
            {"country_iso": r["country_iso"], **{f: 0 for f in fields}, "units": 0, "seconds": 0.0},
        )
        for f in fields:
            row[f] += int(r.get(f, 0))
        row["units"] += 1
        row["seconds"] += float(r.get("_wall_s", 0.0))
    rows = list(by.values())
    for row in rows:
        row["seconds"] = round(row["seconds"], 4)
    return sorted(rows, key=lambda t: (-t["seconds"], t["country_iso"]))


# -- the reference record of a parameter_hash (read by S6-S9) ---------------------------------------------


def publish_reference(storage: Storage, polys: refdata.Countries, params: SegmentParameters) -> None:
    """Record what a parameter_hash stands for where every worker can read it (write-once).

    * ``parameters``: the canonical :class:`SegmentParameters` JSON (the grid and digests for S6-S9);
    * ``reference_countries``: the cleaned polygons as GeoParquet (EPSG:4326), for S6 jitter and S9 checks.
    """
    import io

    import geopandas as gpd

    storage.publish_file(path_for("parameters", parameter_hash=params.parameter_hash),
                         canonical_json(params.canonical()), "parameters")
    rel = path_for("reference_countries", countries_sha256=polys.sha256)
    if not storage.exists(rel):
        frame = gpd.GeoDataFrame({"country_iso": list(polys.iso)}, geometry=list(polys.geometry), crs="EPSG:4326")
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        storage.write_bytes(rel, buf.getvalue())


# -- command line --------------------------------------------------------------------------------------


def register(subparsers) -> None:
    """Add ``segment1b prepare``."""
    from . import argtypes
    from .session import add_cluster_options, add_lease_options, add_root_options

    p = subparsers.add_parser(
        "prepare", help="build the tile index and tile weights (S1, S2)", description=__doc__.split("\n\n")[0]
    )
    add_root_options(p)
    p.add_argument(
        "--grid",
        type=argtypes.grid_name,
        default=None,
        metavar="|".join(NAMED_GRIDS),
        help="named world grid (30s = full scale); optional with --raster",
    )
    p.add_argument("--raster", default=None, metavar="POP.TIF", help="population GeoTIFF (defines the grid)")
    p.add_argument(
        "--countries",
        default=None,
        metavar="FILE",
        help="country polygons (GeoParquet/GeoPackage/Shapefile); default: embedded Natural Earth",
    )
    p.add_argument("--iso-column", default=None, metavar="COL", help="ISO alpha-2 column of --countries")
    p.add_argument(
        "--basis",
        choices=WEIGHT_BASES,
        default=None,
        help="weight basis (default: population with --raster, else population_proxy)",
    )
    p.add_argument("--dp", type=int, default=8, help="decimal places of weight_fp (default 8)")
    p.add_argument(
        "--require-countries",
        default=None,
        metavar="ISO,ISO",
        help="countries that must get tiles (E103_ZERO_COUNTRY otherwise)",
    )
    p.add_argument("--unit-cells", type=argtypes.positive_int, default=DEFAULT_UNIT_CELLS, help=argparse.SUPPRESS)
    add_lease_options(p)
    add_cluster_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out=None) -> int:
    from .session import open_session

    if args.grid is None and args.raster is None:
        raise InputError(
            "E002_RASTER_MISMATCH", f"give --grid ({', '.join(sorted(NAMED_GRIDS))}) or --raster"
        )
    require = (
        [c.strip() for c in args.require_countries.split(",") if c.strip()]
        if args.require_countries
        else None
    )
    with open_session(args, out=out) as (storage, client):
        prepare(
            storage,
            client,
            grid=args.grid,
            countries=args.countries,
            raster=args.raster,
            basis=args.basis,
            dp=args.dp,
            iso_column=args.iso_column,
            require=require,
            unit_cells=args.unit_cells,
            out=out,
        )
    return 0
