"""The worker side of ``segment1b prepare`` (:mod:`jobs.prepare` plans, submits and publishes).

* :func:`s1_unit_task` (``s1-tiles-<ISO>-<band>``): the exact centre-rule tiles of one unit, its tile_index and
  tile_bounds parts, and what S2 needs of the unit (raster values or the proxy's town kernel and land shares);
* :func:`s1_meta` (``s1-meta-<ISO>-<band>``): the small part of that result the client gathers;
* :func:`s2_country_task` (``s2-weights-<ISO>``): one country's masses
  (:func:`segment1b.s2_tile_weights.country_masses`), exact weights and tile_weights parts.

Arguments are small picklable recipes (:class:`Job`, :class:`CountryInput`); results are typed records
(:class:`S1Unit`, :class:`S2Country`) timed by :func:`jobs.runtime.timed`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from segment1b import refdata
from segment1b.contracts import dataset as dataset_spec
from segment1b.grid import Grid
from segment1b.s1_tile_index import Runs, Unit, runs_to_cells, tile_bounds_table, tile_index_table, tile_unit
from segment1b.population_proxy import LandStats, ProxyParams, proxy_kernel_mass
from segment1b.s2_tile_weights import country_masses, country_weights, raster_masses, total_as_float, weights_table
from segment1b.storage import StagedFile, Storage, part_name, write_parquet_bytes

from .runtime import Timing

__all__ = ["Job", "CountryInput", "country_inputs", "S1Unit", "S2Country", "s1_unit_task", "s1_meta",
           "s2_country_task", "PARQUET_ENCODINGS"]

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


def country_inputs(countries: refdata.Countries, places: refdata.Places | None) -> dict[str, CountryInput]:
    """Each country's polygon and (for the proxy) towns, to scatter once per country."""
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


def _write(job: Job, dataset_id: str, part: int, table) -> StagedFile:
    data = write_parquet_bytes(
        table,
        dataset_spec(dataset_id),
        row_group_rows=ROW_GROUP_ROWS,
        encodings=PARQUET_ENCODINGS[dataset_id],
    )
    return job.storage.write_part(job.staging[dataset_id], part_name(part), data)


def _read_raster_windows(path: str, unit: Unit) -> tuple[list[tuple[int, np.ndarray]], float | None]:
    """The raster's values in the unit's windows (column of each window's start, 2-D array), and its nodata."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        out = [(c0, src.read(1, window=Window(c0, unit.row0, c1 - c0, unit.row1 - unit.row0)))
               for c0, c1 in unit.windows]
        return out, src.nodata


@dataclass(frozen=True)
class S1Unit:
    """What an S1 unit task produced: the unit's tiles as runs (with the kernel's counters), the parts it
    staged, and the mass input of S2 (``None``, raster values, or the proxy's town kernel)."""

    country_iso: str
    band: int
    part: int
    rows: int
    runs: Runs = field(repr=False)
    mass: Any = field(default=None, repr=False)
    bytes: int = 0
    files: dict[str, StagedFile] = field(default_factory=dict)
    timing: Timing = Timing()

    def count(self, name: str) -> int:
        """``rows``, ``bytes`` or one of the kernel's counters (``cells``, ``boundary_cells``, ...; 0 if absent)."""
        return {"rows": self.rows, "bytes": self.bytes}.get(name, self.runs.stats.get(name, 0))


def s1_unit_task(job: Job, unit: Unit, country: CountryInput) -> S1Unit:
    """S1 for one unit: tiles, tile_index + tile_bounds parts, and the mass inputs of S2."""
    geom = shapely.from_wkb(country.wkb)
    # the proxy weights tiles by their land share (docs/population-proxy.md); other bases do not need it
    land_samples = job.proxy.land_samples if job.basis == "population_proxy" else 0
    runs = tile_unit(geom, job.grid, unit, rule=job.rule, land_samples=land_samples)
    if not runs.n_tiles:
        return S1Unit(unit.country_iso, unit.band, unit.part, 0, runs)
    cells = runs_to_cells(runs)
    table = tile_index_table(unit.country_iso, runs, job.grid, job.rule, cells=cells)
    ids = table.column("tile_id").to_numpy()
    files = {"tile_index": _write(job, "tile_index", unit.part, table)}  # what this unit wrote: the publish check
    del table
    files["tile_bounds"] = _write(job, "tile_bounds", unit.part,
                                  tile_bounds_table(unit.country_iso, runs, job.grid, cells=cells))
    mass: Any = None
    if job.basis == "population":
        windows, nodata = _read_raster_windows(job.raster, unit)
        mass = raster_masses(cells[0], cells[1], unit.row0, windows, nodata)
    elif job.basis == "population_proxy":
        mass = proxy_kernel_mass(ids, job.grid, country.lon, country.lat, country.pop, job.proxy, unit.row0,
                                 unit.row1)
    return S1Unit(unit.country_iso, unit.band, unit.part, runs.n_tiles, runs, mass,
                  sum(f.size for f in files.values()), files)


def s1_meta(result: S1Unit) -> S1Unit:
    """The small part of an S1 result that the client gathers (runs and counters, no masses or land shares)."""
    return dataclasses.replace(result, mass=None, runs=dataclasses.replace(result.runs, land=None))


@dataclass(frozen=True)
class S2Country:
    """What an S2 country task produced: rows, exact mass total, the parts it staged, and its counters."""

    country_iso: str
    rows: int
    mass: float = 0.0
    zero_mass_fallback: bool = False
    files: list[StagedFile] = field(default_factory=list)
    weight_sum: int = 0
    weighted_tiles: int = 0  # what S9's plan recomputation holds (jobs.footprint)
    land: LandStats | None = None  # population_proxy only
    timing: Timing = Timing()

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def s2_country_task(job: Job, iso: str, town_total: float, units: list[Unit], *results: S1Unit) -> S2Country:
    """S2 for one country: masses over all its units, exact weights, tile_weights parts (S1's part numbers)."""
    runs = [r.runs for r in results]
    n = int(sum(r.rows for r in results))
    if n == 0:
        return S2Country(iso, 0)
    masses, land = country_masses(job.basis, job.grid, runs, [r.mass for r in results], town_total, job.proxy)

    def all_ids() -> np.ndarray:
        return np.concatenate([r.tile_ids(job.grid.ncols) for r in runs])

    weights, fallback, total = country_weights(masses, all_ids, job.dp, iso)
    del masses
    files = []
    start = 0
    for result in results:
        if not result.rows:
            continue
        stop = start + result.rows
        table = weights_table(iso, result.runs.tile_ids(job.grid.ncols), weights[start:stop], job.dp, fallback)
        files.append(_write(job, "tile_weights", result.part, table))
        start = stop
    return S2Country(iso, n, 0.0 if fallback else total_as_float(total), fallback, files,
                     int(weights.sum(dtype=np.uint64)), int(np.count_nonzero(weights)), land)
