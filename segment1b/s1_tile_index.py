"""S1 tile index: which grid cells belong to which country (contract §3), as pure kernels.

A work unit is one country and one band of grid rows, restricted to *column windows*: the merged column
ranges of the country's polygon parts that reach the band.  Antimeridian countries (Fiji, Russia, the
USA's Aleutians, Kiribati) therefore rasterise their few hundred columns at either edge of the grid, not
the 360 degrees in between.

Inclusion rule ``center``: a cell belongs to a country when its centre is inside the country polygon or
on its boundary, not in a hole.  The kernel is exact for that rule:

1. ``rasterio.features.rasterize`` (GDAL, pixel-centre rule) fills the band: work proportional to area;
2. the cells that the polygon boundary touches (rasterised with ``all_touched=True``), dilated by one
   cell for safety, are decided again with ``shapely.intersects_xy`` on the *original* prepared country
   geometry at the grid's own centre coordinates (boundary counts as inside): work proportional to
   perimeter.  Every other cell lies wholly inside or outside the polygon, where GDAL's answer is exact.

The kernel returns the band's tiles as runs ``(row, col_start, col_end)`` (half-open, ascending by row
then column, so expanding them gives ascending ``tile_id``), which also feed the cross-country duplicate
check (E003_DUP_TILE).

Land share (for the population proxy of S2, docs/population-proxy.md): on request the kernel also
estimates ``f_t = area(cell ∩ country) / area(cell)`` of the tiles that the boundary touches (step 2's
cells before dilation; every other tile lies wholly inside the country, ``f_t = 1``) by counting the
points of a fixed ``s x s`` lattice of sub-cell centres that fall inside the country
(:func:`land_share_counts`).  Only tiles with a count below ``s²`` are kept (:class:`LandShares`), so the
cost and the size are proportional to the coastline, not to the area.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
import shapely

from .contracts import INCLUSION_RULES
from .errors import InputError, IntegrityError
from .grid import Grid, wrap_lon

__all__ = [
    "Unit",
    "Runs",
    "LandShares",
    "plan_units",
    "tile_unit",
    "land_share_counts",
    "runs_to_cells",
    "tile_index_table",
    "tile_bounds_table",
    "find_duplicate_tiles",
    "check_pixel_areas",
    "string_column",
    "sample_agreement",
    "DEFAULT_UNIT_CELLS",
]

# Cells (rows x window columns) per work unit: ~8 M cells keep a unit's arrays near 0.5 GiB at most
# and make the 30" world ~150 units (Russia ~15 of them, Monaco one).
DEFAULT_UNIT_CELLS = 8_000_000
# Column windows closer than this are merged (fewer rasterize calls for archipelagos).
WINDOW_GAP_COLS = 64
# Cells per shapely.intersects_xy call of the land-share lattice (s = 8: 4 M points, ~100 MB of temporaries).
LAND_CHUNK_CELLS = 1 << 16


@dataclass(frozen=True)
class Unit:
    """One S1/S2 work unit: a country, a band of rows ``[row0, row1)`` and its column windows.

    ``part`` is the part number of the unit's files in tile_index, tile_bounds and tile_weights; it is
    fixed by the plan (country ASCII order, then band), never by workers.
    """

    country_iso: str
    band: int
    part: int
    row0: int
    row1: int
    windows: tuple[tuple[int, int], ...]

    @property
    def cells(self) -> int:
        """Cells rasterised (the unit's cost)."""
        return (self.row1 - self.row0) * sum(c1 - c0 for c0, c1 in self.windows)


@dataclass(frozen=True)
class LandShares:
    """Land share of a unit's partial tiles: ``f = inside / samples**2`` (every other tile has ``f = 1``).

    ``index`` is the tile's position among the unit's tiles (ascending tile_id, the order of
    :func:`runs_to_cells`), ascending; ``inside`` counts the lattice points inside the country, in
    ``0 .. samples**2 - 1``.  Integer counts keep every sum over them exact (docs/population-proxy.md).
    """

    index: np.ndarray = field(repr=False)  # int64
    inside: np.ndarray = field(repr=False)  # uint16
    samples: int = 0

    @property
    def share(self) -> np.ndarray:
        """``f_t`` of the partial tiles (float64; exact for power-of-two ``samples``)."""
        return self.inside.astype(np.float64) / float(self.samples * self.samples)


@dataclass(frozen=True)
class Runs:
    """Tiles of a unit as runs: row, col_start, col_end (half-open), ascending; plus kernel counters.

    ``land`` holds the land shares of the partial tiles when :func:`tile_unit` was asked for them.
    """

    row: np.ndarray = field(repr=False)  # uint32
    col0: np.ndarray = field(repr=False)  # uint32
    col1: np.ndarray = field(repr=False)  # uint32
    stats: dict = field(default_factory=dict)
    land: LandShares | None = field(default=None, repr=False)

    @property
    def n_tiles(self) -> int:
        return int((self.col1.astype(np.int64) - self.col0).sum())

    def tile_ids(self, ncols: int) -> np.ndarray:
        rows, cols = runs_to_cells(self)
        return rows.astype(np.uint64) * np.uint64(ncols) + cols


# -- planning ----------------------------------------------------------------------------------------


def _part_cell_ranges(geom, grid: Grid) -> np.ndarray:
    """Per polygon part: [row0, row1, col0, col1) of the cells whose centre can lie in its bbox.

    One cell of margin on every side (the exact test decides); clamped to the grid; empty parts dropped.
    """
    parts = shapely.get_parts(geom)
    if len(parts) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    b = shapely.bounds(parts)
    c0 = np.ceil((b[:, 0] - grid.west) / grid.dx - 0.5) - 1
    c1 = np.floor((b[:, 2] - grid.west) / grid.dx - 0.5) + 2
    r0 = np.ceil((grid.north - b[:, 3]) / grid.dy - 0.5) - 1
    r1 = np.floor((grid.north - b[:, 1]) / grid.dy - 0.5) + 2
    out = np.stack(
        [
            np.clip(r0, 0, grid.nrows),
            np.clip(r1, 0, grid.nrows),
            np.clip(c0, 0, grid.ncols),
            np.clip(c1, 0, grid.ncols),
        ],
        axis=1,
    ).astype(np.int64)
    keep = (out[:, 1] > out[:, 0]) & (out[:, 3] > out[:, 2])
    return out[keep]


def _merge(c0: np.ndarray, c1: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Merge column intervals that overlap or are closer than ``gap`` columns."""
    order = np.lexsort((c1, c0))
    merged: list[list[int]] = []
    for a, b in zip(c0[order].tolist(), c1[order].tolist()):
        if merged and a <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def plan_units(
    countries: Sequence[tuple[str, object]],
    grid: Grid,
    unit_cells: int = DEFAULT_UNIT_CELLS,
    *,
    gap: int = WINDOW_GAP_COLS,
) -> list[Unit]:
    """Cut every country into row bands of at most about ``unit_cells`` cells (pure, deterministic).

    Parameters
    ----------
    countries : sequence of (iso, geometry)
        Any order; units come out in (ISO ASCII, band) order with consecutive ``part`` numbers.
    grid : Grid
    unit_cells : int
        Cell budget per unit.  A band is ``unit_cells // (country window width)`` rows (at least one).

    Returns
    -------
    list of Unit
        Countries whose parts cover no cell centre range get no unit.

    Examples
    --------
    >>> g = Grid(west=0.0, north=10.0, dx=1.0, dy=1.0, ncols=10, nrows=10)
    >>> [(u.country_iso, u.row0, u.row1, u.windows) for u in plan_units([("AA", shapely.box(1, 1, 3, 3))], g)]
    [('AA', 6, 10, ((0, 4),))]
    """
    units: list[Unit] = []
    for iso, geom in sorted(countries, key=lambda t: t[0]):
        ranges = _part_cell_ranges(geom, grid)
        if len(ranges) == 0:
            continue
        width = sum(b - a for a, b in _merge(ranges[:, 2], ranges[:, 3], gap))
        band_rows = max(1, int(unit_cells) // max(width, 1))
        r_start, r_end = int(ranges[:, 0].min()), int(ranges[:, 1].max())
        for band, r0 in enumerate(range(r_start, r_end, band_rows)):
            r1 = min(r0 + band_rows, r_end)
            hit = (ranges[:, 0] < r1) & (ranges[:, 1] > r0)
            if not hit.any():
                continue
            windows = tuple(_merge(ranges[hit, 2], ranges[hit, 3], gap))
            units.append(Unit(iso, band, len(units), r0, r1, windows))
    return units


# -- the kernel --------------------------------------------------------------------------------------


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation with plain NumPy shifts."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    rows = out.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def tile_unit(geom, grid: Grid, unit: Unit, *, rule: str = "center", land_samples: int = 0) -> Runs:
    """The tiles of one work unit, exact for the ``center`` rule.

    Parameters
    ----------
    geom : shapely (Multi)Polygon
        The whole country (lon/lat).  It is prepared in place (``shapely.prepare``).
    grid : Grid
    unit : Unit
    rule : str
        Inclusion rule; only ``center`` (E008 otherwise).
    land_samples : int
        ``s`` of the land-share lattice (:func:`land_share_counts`); 0 (default) skips the estimate.

    Returns
    -------
    Runs
        With ``stats``: ``cells`` rasterised, ``boundary_cells`` decided exactly, ``refined`` (cells where
        the exact test overruled GDAL's fill), ``tiles``; with ``land_samples``, ``land`` holds the
        :class:`LandShares` of the partial tiles and ``stats`` adds ``land_tested`` (tiles the boundary
        touches) and ``partial_tiles`` (those with a share below 1).
    """
    from rasterio.features import rasterize

    if rule not in INCLUSION_RULES:
        raise InputError(
            "E008_INCLUSION_RULE",
            f"inclusion rule {rule!r} is not supported; choose one of {INCLUSION_RULES}",
            dataset="tile_index",
        )
    shapely.prepare(geom)
    nrows = unit.row1 - unit.row0
    west = float(grid.col_west(unit.windows[0][0])) - grid.dx
    east = float(grid.col_east(unit.windows[-1][1] - 1)) + grid.dx
    north = float(grid.row_north(unit.row0)) + grid.dy
    south = float(grid.row_south(unit.row1 - 1)) - grid.dy
    # Clip a cell beyond the band so that the clip's own edges lie between cell centres.
    band_geom = shapely.clip_by_rect(geom, west, south, east, north)
    parts = shapely.get_parts(band_geom)
    parts = parts[np.isin(shapely.get_type_id(parts), (3, 6)) & ~shapely.is_empty(parts)]
    pb = shapely.bounds(parts) if len(parts) else np.zeros((0, 4))
    rows_out, c0_out, c1_out = [], [], []
    edge_r, edge_c = [], []  # tiles the boundary touches (land-share candidates)
    stats = {"cells": 0, "boundary_cells": 0, "refined": 0}
    for c0, c1 in unit.windows:
        ncols = c1 - c0
        stats["cells"] += nrows * ncols
        wx0, wx1 = float(grid.col_west(c0)) - grid.dx, float(grid.col_east(c1 - 1)) + grid.dx
        sel = parts[(pb[:, 2] >= wx0) & (pb[:, 0] <= wx1)] if len(parts) else parts
        if len(sel) == 0:
            continue
        shape_geom = shapely.multipolygons(sel) if len(sel) > 1 else sel[0]
        transform = grid.window_transform(unit.row0, c0)
        fill = rasterize(
            [(shape_geom, 1)],
            out_shape=(nrows, ncols),
            transform=transform,
            fill=0,
            all_touched=False,
            dtype="uint8",
        ).view(bool)
        edge = rasterize(
            [(shapely.boundary(shape_geom), 1)],
            out_shape=(nrows, ncols),
            transform=transform,
            fill=0,
            all_touched=True,
            dtype="uint8",
        ).view(bool)
        cand = _dilate(edge)
        ii, jj = np.nonzero(cand)
        if len(ii):
            x = grid.col_center(jj + c0)
            y = grid.row_center(ii + unit.row0)
            exact = shapely.intersects_xy(geom, x, y)
            stats["boundary_cells"] += len(ii)
            stats["refined"] += int((fill[ii, jj] != exact).sum())
            fill[ii, jj] = exact
            if land_samples:
                # a tile the boundary does not touch lies wholly inside the country: f = 1
                touched = edge[ii, jj] & exact
                edge_r.append(ii[touched] + unit.row0)
                edge_c.append(jj[touched] + c0)
        r, s, e = _mask_runs(fill)
        rows_out.append(r + unit.row0)
        c0_out.append(s + c0)
        c1_out.append(e + c0)
    if rows_out:
        row = np.concatenate(rows_out).astype(np.uint32)
        col0 = np.concatenate(c0_out).astype(np.uint32)
        col1 = np.concatenate(c1_out).astype(np.uint32)
        order = np.lexsort((col0, row))
        row, col0, col1 = row[order], col0[order], col1[order]
    else:
        row = col0 = col1 = np.zeros(0, dtype=np.uint32)
    land = None
    if land_samples:
        land = _land_shares(geom, grid, row, col0, col1, edge_r, edge_c, land_samples)
        stats["land_tested"] = int(sum(len(r) for r in edge_r))
        stats["partial_tiles"] = int(len(land.index))
    runs = Runs(row, col0, col1, stats, land)
    stats["tiles"] = runs.n_tiles
    stats["n_runs"] = int(len(row))
    return runs


def land_share_counts(geom, grid: Grid, rows: np.ndarray, cols: np.ndarray, samples: int) -> np.ndarray:
    """Points of an ``s x s`` lattice of sub-cell centres inside ``geom``, per cell (``s = samples``).

    Cell (r, c) is tested at ``lon = west_c + (j + 0.5) dx / s`` and ``lat = north_r - (i + 0.5) dy / s``
    for i, j in 0..s-1 (longitudes wrapped into [-180, 180), as S6 wraps its candidates), with
    ``shapely.intersects_xy`` (boundary counts as inside, as in S6).  ``count / s²`` estimates the cell's
    share of the country in lon/lat measure -- the probability that one S6 attempt in that tile lands in
    the country.  It is exact for a straight edge through the cell centre parallel to a side, and its
    error for a straight edge is below ``1/s``; on the Natural Earth coastlines at 5' the mean absolute
    error against exact shapely areas is 0.03 for s = 4 and 0.01 for s = 8 (docs/population-proxy.md).

    Work: ``len(rows) * s²`` point-in-polygon tests (about 150-270 ns each on a prepared country), in
    chunks of :data:`LAND_CHUNK_CELLS` cells.

    Parameters
    ----------
    geom : shapely geometry
        The country, prepared (``shapely.prepare``) for speed.
    grid : Grid
    rows, cols : int arrays
        The cells.
    samples : int
        Lattice size ``s`` (1..16).

    Returns
    -------
    uint16 array, one count in 0..s² per cell.

    Examples
    --------
    >>> g = Grid(west=0.0, north=2.0, dx=1.0, dy=1.0, ncols=2, nrows=2)
    >>> land_share_counts(shapely.box(0.0, 0.0, 1.5, 2.0), g, np.array([0, 1]), np.array([0, 1]), 4).tolist()
    [16, 8]
    """
    s = int(samples)
    if not 1 <= s <= 16:
        raise InputError("E105_NORMALIZATION", f"land-share lattice size {samples!r} must be in 1..16")
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.uint16)
    step = (np.arange(s, dtype=np.float64) + 0.5) / s
    dx_off = step * grid.dx  # along a row of the lattice (lon)
    dy_off = step * grid.dy  # down a column of the lattice (lat)
    for a in range(0, len(rows), LAND_CHUNK_CELLS):
        r, c = rows[a : a + LAND_CHUNK_CELLS], cols[a : a + LAND_CHUNK_CELLS]
        x = wrap_lon(grid.col_west(c)[:, None, None] + dx_off[None, None, :])
        y = grid.row_north(r)[:, None, None] - dy_off[None, :, None]
        x, y = np.broadcast_arrays(x, y)
        inside = shapely.intersects_xy(geom, x.ravel(), y.ravel())
        out[a : a + LAND_CHUNK_CELLS] = inside.reshape(len(r), s * s).sum(axis=1, dtype=np.uint16)
    return out


def _land_shares(geom, grid: Grid, row, col0, col1, edge_r, edge_c, samples: int) -> LandShares:
    """Land shares of the unit's boundary tiles, indexed by position among the unit's tiles."""
    empty = LandShares(np.zeros(0, np.int64), np.zeros(0, np.uint16), int(samples))
    if not edge_r or not sum(len(r) for r in edge_r):
        return empty
    r = np.concatenate(edge_r).astype(np.int64)
    c = np.concatenate(edge_c).astype(np.int64)
    inside = land_share_counts(geom, grid, r, c, samples)
    keep = inside < samples * samples
    r, c, inside = r[keep], c[keep], inside[keep]
    if not len(r):
        return empty
    # position among the unit's tiles: the run holding the cell, plus the offset inside the run
    ncols = np.int64(grid.ncols)
    tid = r * ncols + c
    order = np.argsort(tid, kind="stable")
    tid, c, inside = tid[order], c[order], inside[order]
    run_start = row.astype(np.int64) * ncols + col0.astype(np.int64)
    run_len = col1.astype(np.int64) - col0.astype(np.int64)
    first = np.cumsum(run_len) - run_len
    k = np.searchsorted(run_start, tid, side="right") - 1
    index = first[k] + (c - col0.astype(np.int64)[k])
    return LandShares(index, inside, int(samples))


def _mask_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True per row of a 2-D mask: (row, start, end), row-major."""
    nr, nc = mask.shape
    padded = np.zeros((nr, nc + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    sr, sc = np.nonzero(d == 1)
    _, ec = np.nonzero(d == -1)
    return sr.astype(np.int64), sc.astype(np.int64), ec.astype(np.int64)


def runs_to_cells(runs: Runs) -> tuple[np.ndarray, np.ndarray]:
    """Expand runs into (raster_row, raster_col) uint32 arrays in ascending tile_id order."""
    lengths = runs.col1.astype(np.int64) - runs.col0.astype(np.int64)
    n = int(lengths.sum())
    rows = np.repeat(runs.row.astype(np.uint32), lengths)
    # cols: +1 steps inside a run, a jump at each run start; one cumsum (cheaper than arange + repeat)
    step = np.ones(n, dtype=np.int32)
    keep = lengths > 0
    starts = (np.cumsum(lengths) - lengths)[keep]
    c0 = runs.col0.astype(np.int64)[keep]
    prev_last = np.r_[0, (runs.col1.astype(np.int64)[keep] - 1)[:-1]]  # first run: step = col0
    step[starts] = (c0 - prev_last).astype(np.int32)
    cols = np.cumsum(step, dtype=np.int32).view(np.uint32)
    return rows, cols


# -- tables ------------------------------------------------------------------------------------------


def string_column(value: str, n: int) -> pa.Array:
    """A string column holding ``value`` ``n`` times, built from buffers (no Python objects)."""
    data = value.encode("utf-8")
    offsets = np.arange(0, (n + 1) * len(data), len(data), dtype=np.int32)[: n + 1]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def check_pixel_areas(grid: Grid, rows: np.ndarray, country_iso: str) -> np.ndarray:
    """Pixel areas of rows; E006_AREA_NONPOS names rows whose area is not finite and positive."""
    area = grid.pixel_area_m2(rows)
    bad = ~(np.isfinite(area) & (area > 0))
    if bad.any():
        raise IntegrityError(
            "E006_AREA_NONPOS",
            "pixel_area_m2 is not finite and positive",
            dataset="tile_index",
            rows=[
                {"country_iso": country_iso, "raster_row": int(r), "pixel_area_m2": float(a)}
                for r, a in zip(rows[bad][:20], area[bad][:20])
            ],
        )
    return area


def tile_index_table(
    country_iso: str,
    runs: Runs,
    grid: Grid,
    rule: str = "center",
    *,
    cells: tuple[np.ndarray, np.ndarray] | None = None,
) -> pa.Table:
    """tile_index rows of a unit (contract §2), in tile_id order; ``cells``: :func:`runs_to_cells`."""
    rows, cols = cells if cells is not None else runs_to_cells(runs)
    n = len(rows)
    run_len = runs.col1.astype(np.int64) - runs.col0
    run_area = check_pixel_areas(grid, runs.row.astype(np.int64), country_iso)
    return pa.table(
        {
            "country_iso": string_column(country_iso, n),
            "tile_id": grid.tile_id(rows, cols),
            "inclusion_rule": string_column(rule, n),
            "raster_row": rows,
            "raster_col": cols,
            "centroid_lon": grid.col_center(cols),
            "centroid_lat": np.repeat(grid.row_center(runs.row), run_len),
            "pixel_area_m2": np.repeat(run_area, run_len),
        }
    )


def tile_bounds_table(
    country_iso: str, runs: Runs, grid: Grid, *, cells: tuple[np.ndarray, np.ndarray] | None = None
) -> pa.Table:
    """tile_bounds rows of a unit (contract §2), in tile_id order; ``cells``: :func:`runs_to_cells`."""
    rows, cols = cells if cells is not None else runs_to_cells(runs)
    run_len = runs.col1.astype(np.int64) - runs.col0
    return pa.table(
        {
            "country_iso": string_column(country_iso, len(rows)),
            "tile_id": grid.tile_id(rows, cols),
            "west_lon": grid.col_west(cols),
            "east_lon": grid.col_east(cols),
            "south_lat": np.repeat(grid.row_south(runs.row), run_len),
            "north_lat": np.repeat(grid.row_north(runs.row), run_len),
        }
    )


# -- checks ------------------------------------------------------------------------------------------


def find_duplicate_tiles(
    countries: Sequence[str], runs: Sequence[Runs], ncols: int, max_report: int = 100
) -> list[dict]:
    """Tiles claimed by more than one country (E003_DUP_TILE), from every unit's runs.

    Sorts all runs by start cell and compares each with the furthest-reaching run before it: work
    proportional to the number of runs (the countries' perimeters), not to the tiles.

    Returns
    -------
    list of dict
        ``{tile_id, country_iso, other_country_iso}`` for up to ``max_report`` duplicated tiles (the first
        by tile_id); empty when every tile has one country.
    """
    if not runs:
        return []
    who = np.concatenate([np.full(len(r.row), i, dtype=np.int64) for i, r in enumerate(runs)])
    row = np.concatenate([r.row for r in runs]).astype(np.uint64)
    start = row * np.uint64(ncols) + np.concatenate([r.col0 for r in runs]).astype(np.uint64)
    end = row * np.uint64(ncols) + np.concatenate([r.col1 for r in runs]).astype(np.uint64)
    order = np.argsort(start, kind="stable")
    start, end, who = start[order], end[order], who[order]
    if len(start) < 2:
        return []
    reach = np.maximum.accumulate(end)
    overlap = np.flatnonzero(start[1:] < reach[:-1]) + 1
    out: list[dict] = []
    if len(overlap) == 0:
        return out
    # which earlier run reaches furthest at each position (the other claimant)
    idx = np.arange(len(end))
    best = np.maximum.accumulate(np.where(end == reach, idx, 0))
    for i in overlap.tolist():
        j = int(best[i - 1])
        lo, hi = int(start[i]), int(min(end[i], reach[i - 1]))
        a, b = countries[who[i]], countries[who[j]]
        for t in range(lo, hi):
            out.append({"tile_id": t, "country_iso": min(a, b), "other_country_iso": max(a, b)})
            if len(out) >= max_report:
                return out
    return out


def sample_agreement(geom, grid: Grid, tile_ids: np.ndarray, n: int, seed: int = 0) -> dict:
    """Independent check: random cell centres in the country's bbox, shapely ``covers`` vs the tile index.

    Parameters
    ----------
    geom : shapely geometry
        The country (prepare it first for speed; ``covers`` is GEOS point-in-polygon either way).
    grid : Grid
    tile_ids : uint64 array, ascending
        The country's tiles as published.
    n : int
        Sample size (cells drawn uniformly from the bbox, with replacement).
    seed : int
        NumPy seed.

    Returns
    -------
    dict with ``sampled``, ``agree``, ``in_index``, ``in_polygon``, ``on_boundary`` (sampled centres exactly
    on the polygon boundary, which the contract counts as inside) and ``mismatches`` (tile ids).
    """
    b = shapely.bounds(geom)
    rng = np.random.default_rng(seed)
    c_lo = max(0, int(np.floor((b[0] - grid.west) / grid.dx)) - 1)
    c_hi = min(grid.ncols, int(np.ceil((b[2] - grid.west) / grid.dx)) + 1)
    r_lo = max(0, int(np.floor((grid.north - b[3]) / grid.dy)) - 1)
    r_hi = min(grid.nrows, int(np.ceil((grid.north - b[1]) / grid.dy)) + 1)
    empty = {"sampled": 0, "agree": 0, "in_index": 0, "in_polygon": 0, "on_boundary": 0, "mismatches": []}
    if c_hi <= c_lo or r_hi <= r_lo or n <= 0:
        return empty
    rows = rng.integers(r_lo, r_hi, n)
    cols = rng.integers(c_lo, c_hi, n)
    pts = shapely.points(grid.col_center(cols), grid.row_center(rows))
    in_poly = shapely.covers(geom, pts)
    on_boundary = int(shapely.touches(geom, pts[in_poly]).sum()) if in_poly.any() else 0
    ids = grid.tile_id(rows, cols)
    pos = np.minimum(np.searchsorted(tile_ids, ids), max(len(tile_ids) - 1, 0))
    in_index = (tile_ids[pos] == ids) if len(tile_ids) else np.zeros(n, dtype=bool)
    agree = in_poly == in_index
    return {
        "sampled": int(n),
        "agree": int(agree.sum()),
        "in_index": int(in_index.sum()),
        "in_polygon": int(in_poly.sum()),
        "on_boundary": on_boundary,
        "mismatches": [int(t) for t in ids[~agree][:20]],
    }
