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

Inputs are resolved in :mod:`jobs.prepare_inputs`; the tasks live in :mod:`jobs.prepare_tasks`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from typing import Any, NamedTuple, Sequence

from segment1b.contracts import path_for, report_path
from segment1b.errors import InputError, IntegrityError
from segment1b.grid import NAMED_GRIDS, Grid
from segment1b.identity import WEIGHT_BASES, utc_now
from segment1b.lease import Lease, sweep_when_idle
from segment1b.s1_tile_index import DEFAULT_UNIT_CELLS, Unit, find_duplicate_tiles, plan_units
from segment1b.storage import Storage

from .footprint import check_memory, prepare_needs
from .prepare_inputs import ResolvedInputs, publish_reference, resolve_inputs
from .prepare_tasks import CountryInput, Job, S1Unit, S2Country, country_inputs, s1_meta, s1_unit_task, s2_country_task
from .runtime import Workers, gather, has_receipt, publish, task_key, timed, token_of, write_state_report

__all__ = ["prepare", "register", "DATASETS"]

DATASETS = ("tile_index", "tile_bounds", "tile_weights")
S2_PRIORITY = 1 << 50  # run a country's S2 as soon as its units are done (frees their results early)


def prepare(storage: Storage, client, *, grid: str | Grid | None = None, countries: str | None = None,
            raster: str | None = None, basis: str | None = None, dp: int = 8, iso_column: str | None = None,
            require: Sequence[str] | None = None, unit_cells: int = DEFAULT_UNIT_CELLS, out=None,
            show_progress: bool = True) -> dict[str, Any]:
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
    ph = resolved.params.parameter_hash
    targets = {ds: path_for(ds, parameter_hash=ph) for ds in DATASETS}
    summary = _summary(storage, resolved, targets)
    publish_reference(storage, resolved.polys, resolved.params)
    scope = path_for("lease_tiles", parameter_hash=ph)
    if _surfaces_finished(storage, targets, ph):
        sweep_when_idle(storage, scope, *targets.values())  # staging left by a killed run, if any
        return _already_published(summary, t_start, out)
    # one run publishes a parameter_hash at a time: the others wait here, then find it published (issue 14)
    with storage.lease(scope, out=out) as lease:
        if _surfaces_finished(storage, targets, ph):
            return _already_published(summary, t_start, out)
        lease.sweep(*targets.values())  # staging of dead attempts: under the lease nobody else is alive
        return _prepare_leased(storage, client, lease, resolved, _Options(require, unit_cells, show_progress),
                               targets, summary, t_start, out)


def _summary(storage: Storage, resolved: ResolvedInputs, targets: dict[str, str]) -> dict[str, Any]:
    """What :func:`prepare` returns, as far as it is known before any work."""
    ph = resolved.params.parameter_hash
    return {
        "parameter_hash": ph,
        "paths": {d: storage.url(p) for d, p in targets.items()},
        "reports": {s: storage.url(report_path(s, parameter_hash=ph)) for s in ("s1", "s2")},
        "grid": resolved.grid.name,
        "basis": resolved.basis,
        "dp": resolved.params.dp,
        "grid_params": resolved.grid.to_params(),
        "countries_sha256": resolved.polys.sha256,
    }


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


class _Options(NamedTuple):
    """How to run prepare (none of it changes a published byte except ``unit_cells``: the part layout)."""

    require: Sequence[str] | None
    unit_cells: int
    show_progress: bool


def _prepare_leased(storage: Storage, client, lease: Lease, resolved: ResolvedInputs, options: _Options,
                    targets: dict[str, str], summary: dict[str, Any], t_start: float, out) -> dict[str, Any]:
    """S1 and S2 on the cluster, then the checks and the publication, under the lease of the parameter_hash."""
    from cluster import reset_worker_memory_peaks

    unit_cells, show_progress = options.unit_cells, options.show_progress

    grid, polys, ph = resolved.grid, resolved.polys, resolved.params.parameter_hash
    # this attempt's staging folders: no other run writes into them or removes them
    staging = {ds: lease.staging_path(targets[ds]) for ds in DATASETS}
    inputs = country_inputs(polys, resolved.places)
    units = plan_units(list(zip(polys.iso, polys.geometry)), grid, unit_cells)
    _ = grid.row_area_m2  # computed once here; shipped with the grid to every task
    job = Job(storage, grid, staging, resolved.basis, resolved.params.dp, resolved.raster, resolved.proxy)
    tok = token_of(ph, storage.root_url, unit_cells, lease.attempt)  # keys of this attempt only
    print(f"prepare: grid {grid.name} {grid.nrows}x{grid.ncols}, {len(polys)} countries, {len(units)} units, "
          f"basis {resolved.basis}, dp {resolved.params.dp}, parameter_hash {ph[:16]}...", file=out)
    # units are a layout constant: a worker that cannot hold the largest would pause for good (issue #14)
    check_memory(client, prepare_needs(units), step=f"prepare on the {grid.name} grid")
    reset_worker_memory_peaks(client)
    t_run = time.perf_counter()
    started = utc_now()
    try:
        meta_futs, s2_futs = _submit(client, job, units, inputs, tok)
        meta = gather(client, meta_futs, "s1 tile index", out, show=show_progress)
        t_s1 = time.perf_counter() - t_run
        s2 = sorted(gather(client, s2_futs, "s2 tile weights", out, show=show_progress).values(),
                    key=lambda r: r.country_iso)
        t_s2 = time.perf_counter() - t_run
        s1 = sorted(meta.values(), key=lambda r: r.part)
        tiles_by_country = _check_tiles(s1, grid, polys, options.require)
        receipts = _publish(storage, staging, s1, s2, ph)
    except BaseException:
        for rel in staging.values():
            storage.discard(rel)  # best effort: never hides the failure being cleaned up after
        raise
    workers = Workers.of(client)
    zero_tile = sorted(set(polys.iso) - {c for c, n in tiles_by_country.items() if n})
    _write_s1_report(storage, resolved, s1, receipts, t_s1, workers, started, units, unit_cells, zero_tile)
    _write_s2_report(storage, resolved, s2, receipts, t_s2, workers, started)
    summary.update(skipped=False, countries=len(polys) - len(zero_tile), tiles=sum(r.rows for r in s1),
                   units=len(units), seconds=time.perf_counter() - t_start, receipts=receipts,
                   peak_worker_rss_bytes=dict(workers.peak_rss_bytes), countries_without_tiles=zero_tile)
    _print_done(summary, t_s1, t_s2, out)
    return summary


def _submit(client, job: Job, units: list[Unit], inputs: dict[str, CountryInput],
            tok: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every S1 unit task (the largest country first, so its long S2 task starts early), its small meta
    task, and one S2 task per country; the futures of what the client gathers: metas and S2 results.

    The S1 results themselves are referenced only by their S2 task, so they are released once it is done.
    """
    country_futs = dict(zip(inputs, client.scatter([inputs[i] for i in inputs], hash=False)))
    country_cells: dict[str, int] = {}
    for u in units:
        country_cells[u.country_iso] = country_cells.get(u.country_iso, 0) + u.cells
    meta_futs: dict[str, Any] = {}
    by_country: dict[str, list[tuple[Unit, Any]]] = {}
    for u in units:
        fut = client.submit(timed(s1_unit_task), job, u, country_futs[u.country_iso],
                            key=task_key("s1", "tiles", u.country_iso, u.band, tok),
                            priority=country_cells[u.country_iso], pure=False)
        key = task_key("s1", "meta", u.country_iso, u.band, tok)
        meta_futs[key] = client.submit(s1_meta, fut, key=key, priority=S2_PRIORITY, pure=False)
        by_country.setdefault(u.country_iso, []).append((u, fut))
    s2_futs = {}
    for iso, pairs in by_country.items():
        key = task_key("s2", "weights", iso, token=tok)
        s2_futs[key] = client.submit(timed(s2_country_task), job, iso, inputs[iso].town_total,
                                     [u for u, _ in pairs], *[f for _, f in pairs], key=key, priority=S2_PRIORITY,
                                     pure=False)
    return meta_futs, s2_futs


def _check_tiles(s1: list[S1Unit], grid: Grid, polys, require: Sequence[str] | None) -> dict[str, int]:
    """Tiles per country, once no tile has two countries (E003) and every required country has tiles (E103)."""
    dups = find_duplicate_tiles([r.country_iso for r in s1], [r.runs for r in s1], grid.ncols)
    if dups:
        raise IntegrityError("E003_DUP_TILE", f"{len(dups)}+ tiles are claimed by two countries (overlapping "
                             "polygons, or a cell centre exactly on a shared border)", dataset="tile_index",
                             rows=dups, hint="fix the overlap in the country polygons")
    tiles_by_country: dict[str, int] = {}
    for r in s1:
        tiles_by_country[r.country_iso] = tiles_by_country.get(r.country_iso, 0) + r.rows
    missing = sorted(c for c in (require or ()) if tiles_by_country.get(c, 0) == 0)
    if missing:
        raise InputError("E103_ZERO_COUNTRY", f"{len(missing)} required countries have no tile at grid {grid.name}",
                         dataset="tile_index",
                         rows=[{"country_iso": c, "in_polygons": c in polys.iso} for c in missing],
                         hint="use a finer grid, or add the countries' polygons")
    return tiles_by_country


def _publish(storage: Storage, staging: dict[str, str], s1: list[S1Unit], s2: list[S2Country],
             ph: str) -> dict[str, dict[str, str]]:
    """The three surfaces published from staging, each holding exactly what its tasks wrote; their receipts."""
    written = {"tile_index": [r.files["tile_index"] for r in s1 if r.files],
               "tile_bounds": [r.files["tile_bounds"] for r in s1 if r.files],
               "tile_weights": [f for r in s2 for f in r.files]}
    return {ds: publish(storage, ds, staging[ds], expected=written[ds], parameter_hash=ph) for ds in DATASETS}


def _identity(resolved: ResolvedInputs) -> dict[str, Any]:
    return {"parameter_hash": resolved.params.parameter_hash, "parameters": resolved.params.canonical()}


def _write_s1_report(storage: Storage, resolved: ResolvedInputs, s1: list[S1Unit], receipts: dict[str, dict[str, str]],
                     wall: float, workers: Workers, started: str, units: list[Unit], unit_cells: int,
                     zero_tile: list[str]) -> None:
    polys = resolved.polys
    fields = ("rows", "cells", "boundary_cells", "refined", "n_runs", "bytes") + \
        (("land_tested", "partial_tiles") if resolved.basis == "population_proxy" else ())
    write_state_report(
        storage, "s1", _identity(resolved), rows=sum(r.rows for r in s1),
        receipts=[receipts["tile_index"], receipts["tile_bounds"]], wall_seconds=wall,
        task_cpu_seconds=sum(r.timing.cpu_s for r in s1), workers=workers, countries=_country_rows(s1, fields),
        started_utc=started, extra={
            "grid": resolved.grid.to_params(), "inclusion_rule": "center", "units": len(units),
            "unit_cells": unit_cells, "countries_total": len(polys),
            "countries_with_tiles": len(polys) - len(zero_tile), "countries_without_tiles": zero_tile,
            "duplicate_tiles": 0, "cells_rasterised": int(sum(r.count("cells") for r in s1)),
            "boundary_cells_exact": int(sum(r.count("boundary_cells") for r in s1)),
            "land_share_tiles_tested": int(sum(r.count("land_tested") for r in s1)),
            "land_share_partial_tiles": int(sum(r.count("partial_tiles") for r in s1)),
            "countries_source": polys.source, "countries_sha256": polys.sha256, "countries_cleaning": polys.cleaning,
            "peak_worker_rss_note": "S1 and S2 run concurrently; peaks cover both"})


def _write_s2_report(storage: Storage, resolved: ResolvedInputs, s2: list[S2Country],
                     receipts: dict[str, dict[str, str]], wall: float, workers: Workers, started: str) -> None:
    params, places = resolved.params, resolved.places
    countries = [{"country_iso": r.country_iso, "rows": r.rows, "mass": r.mass, "weight_sum": r.weight_sum,
                  "weighted_tiles": r.weighted_tiles, "zero_mass_fallback": r.zero_mass_fallback,
                  **(asdict(r.land) if r.land is not None else {}), "seconds": round(r.timing.wall_s, 4)}
                 for r in s2 if r.rows]
    write_state_report(
        storage, "s2", _identity(resolved), rows=sum(r.rows for r in s2), receipts=[receipts["tile_weights"]],
        wall_seconds=wall, task_cpu_seconds=sum(r.timing.cpu_s for r in s2), workers=workers, countries=countries,
        started_utc=started, extra={
            "basis": resolved.basis, "dp": params.dp, "K": 10**params.dp,
            "population_sha256": params.population_sha256, "proxy": params.proxy,
            "places_dropped": places.dropped if places is not None else {},
            "zero_mass_fallback_countries": [r.country_iso for r in s2 if r.zero_mass_fallback],
            "tiles_below_min_land_share": int(sum(r.land.tiles_below_min_land_share for r in s2 if r.land))})


def _country_rows(results: list[S1Unit], fields: tuple[str, ...]) -> list[dict]:
    """S1's per-country counters and seconds summed over units, slowest first (contract §11)."""
    by: dict[str, dict] = {}
    for r in results:
        row = by.setdefault(r.country_iso, {"country_iso": r.country_iso, **{f: 0 for f in fields}, "units": 0,
                                            "seconds": 0.0})
        for f in fields:
            row[f] += int(r.count(f))
        row["units"] += 1
        row["seconds"] += r.timing.wall_s
    rows = list(by.values())
    for row in rows:
        row["seconds"] = round(row["seconds"], 4)
    return sorted(rows, key=lambda t: (-t["seconds"], t["country_iso"]))


def _print_done(summary: dict[str, Any], t_s1: float, t_s2: float, out) -> None:
    peak = max(summary["peak_worker_rss_bytes"].values(), default=0)
    print(f"prepare: {summary['countries']} countries, {summary['tiles']:,} tiles in {summary['seconds']:.1f} s "
          f"(S1 {t_s1:.1f} s, S2 {t_s2:.1f} s); peak worker RSS {peak / 2**20:.0f} MiB\n"
          f"  parameter_hash {summary['parameter_hash']}\n"
          + "".join(f"  {d:<13}{summary['paths'][d]}\n" for d in DATASETS)
          + "".join(f"  {s} report    {summary['reports'][s]}\n" for s in ("s1", "s2")), end="", file=out)


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
