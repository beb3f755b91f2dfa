"""The population proxy: S2's ``population_proxy`` basis when no population raster is given (contract §4).

GeoNames towns spread their population over nearby tiles with an Epanechnikov kernel
(:func:`proxy_kernel_mass`), a rural floor is added, the sum is multiplied by each tile's land share and set
to 0 below a minimum share (:func:`proxy_masses_inplace`), so that S6 never gets a site on a sliver of coast;
the land area of a country is summed exactly per row (:func:`land_area_total`, :func:`land_shares`).  The
constants are :class:`ProxyParams`; the formula and its reasoning are in docs/population-proxy.md.
:func:`segment1b.s2_tile_weights.country_masses` puts the pieces together for one country.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import InputError
from .grid import Grid

if TYPE_CHECKING:
    from .s1_tile_index import Runs

__all__ = ["ProxyParams", "proxy_kernel_mass", "proxy_masses_inplace", "land_area_total", "land_shares",
           "LandStats"]


@dataclass(frozen=True)
class ProxyParams:
    """Constants of the population proxy (they shape ``parameter_hash`` via ``SegmentParameters.proxy``).

    A town of population ``p`` spreads ``p`` over the cells whose centre lies within
    ``R = clip(radius_km_per_sqrt_pop * sqrt(p), radius_min_km, radius_max_km)`` (at least one cell size)
    with an Epanechnikov kernel ``1 - (d/R)^2``; the tile mass adds the rural floor
    ``rural_share * P_c * a_t / A_c`` and is multiplied by the tile's land share ``f_t`` (estimated on a
    ``land_samples x land_samples`` lattice, ``A_c = sum f_t a_t``); tiles with ``f_t < min_land_share``
    get mass 0 (``(1 - 0.25)**64 ~ 1e-8``: the chance that S6 exhausts its 64 attempts on such a tile).
    """

    radius_km_per_sqrt_pop: float = 0.02
    radius_min_km: float = 1.0
    radius_max_km: float = 25.0
    rural_share: float = 0.1
    km_per_degree: float = 111.19508  # 2 pi * 6371.0088 km (mean Earth radius) / 360
    land_samples: int = 8
    min_land_share: float = 0.25
    version: int = 2

    def __post_init__(self):
        if not (isinstance(self.land_samples, int) and 1 <= self.land_samples <= 16):
            raise InputError("E105_NORMALIZATION", f"land_samples={self.land_samples!r} must be an integer in 1..16")
        if not 0.0 <= self.min_land_share <= 1.0:
            raise InputError("E105_NORMALIZATION", f"min_land_share={self.min_land_share!r} must be in [0, 1]")

    def canonical(self) -> dict:
        """Exact, JSON-ready form (floats as ``float.hex``)."""
        return {k: (v.hex() if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _town_disks(lon, lat, pop, grid: Grid, params: ProxyParams):
    """Per town: radius (km), row/col ranges of the enclosing cell rectangle, cos(lat)."""
    kpd = params.km_per_degree
    cos_lat = np.cos(np.radians(lat))
    radius = np.clip(params.radius_km_per_sqrt_pop * np.sqrt(pop), params.radius_min_km, params.radius_max_km)
    cell_km = np.maximum(grid.dx * kpd * cos_lat, grid.dy * kpd)
    radius = np.maximum(radius, cell_km)  # the town's own cell centre is always inside its disk
    row_f = (grid.north - lat) / grid.dy - 0.5
    col_f = (lon - grid.west) / grid.dx - 0.5
    half_rows = radius / (grid.dy * kpd)
    half_cols = np.minimum(radius / (kpd * np.maximum(cos_lat, 1e-9)), 180.0) / grid.dx
    r_lo = np.clip(np.ceil(row_f - half_rows), 0, grid.nrows).astype(np.int64)
    r_hi = np.clip(np.floor(row_f + half_rows) + 1, 0, grid.nrows).astype(np.int64)
    c_lo = np.ceil(col_f - half_cols).astype(np.int64)
    c_hi = (np.floor(col_f + half_cols) + 1).astype(np.int64)
    return radius, r_lo, r_hi, c_lo, c_hi, cos_lat


def _disk_cells(t_sel, r_lo, r_hi, c_lo, c_hi):
    """Enumerate the cells of the selected towns' rectangles: (town, row, col), town-major, row-major."""
    nr = r_hi[t_sel] - r_lo[t_sel]
    nc = c_hi[t_sel] - c_lo[t_sel]
    count = np.maximum(nr, 0) * np.maximum(nc, 0)
    total = int(count.sum())
    town = np.repeat(t_sel, count)
    local = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    ncr = np.repeat(nc, count)
    row = np.repeat(r_lo[t_sel], count) + local // np.maximum(ncr, 1)
    col = np.repeat(c_lo[t_sel], count) + local % np.maximum(ncr, 1)
    return town, row, col


def proxy_kernel_mass(
    tile_ids: np.ndarray,
    grid: Grid,
    lon: np.ndarray,
    lat: np.ndarray,
    pop: np.ndarray,
    params: ProxyParams,
    row0: int,
    row1: int,
    batch_cells: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Town part of the population proxy for the tiles of one band (sparse).

    Each town (of this country, in a fixed order) spreads its population over the grid cells whose centre
    lies within its radius, with weights ``1 - (d/R)^2`` normalised over *all* cells of its disk (so the
    result does not depend on the band or the chunking); only cells that are tiles of the country receive
    mass.  Distances use a local flat approximation: ``dy = dlat * km_per_degree``,
    ``dx = dlon * km_per_degree * cos(lat_town)`` (dlon wrapped across the antimeridian).

    Parameters
    ----------
    tile_ids : uint64 array, ascending
        The band's tiles.
    grid : Grid
    lon, lat, pop : float64 arrays
        The country's towns, in the order that fixes the summation order.
    params : ProxyParams
    row0, row1 : int
        The band's rows.

    Returns
    -------
    (index into tile_ids, mass) for the tiles that receive town mass, index ascending.

    Examples
    --------
    >>> g = Grid(west=0.0, north=1.0, dx=0.1, dy=0.1, ncols=10, nrows=10)
    >>> ids = g.tile_id(np.repeat(np.arange(10), 10), np.tile(np.arange(10), 10))
    >>> idx, m = proxy_kernel_mass(ids, g, np.array([0.55]), np.array([0.45]), np.array([1000.0]),
    ...                            ProxyParams(), 0, 10)
    >>> round(float(m.sum()), 6)
    1000.0
    """
    n = len(tile_ids)
    if n == 0 or len(pop) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    radius, r_lo, r_hi, c_lo, c_hi, cos_lat = _town_disks(lon, lat, pop, grid, params)
    touch = np.flatnonzero((r_lo < row1) & (r_hi > row0) & (r_hi > r_lo))
    acc = np.zeros(n, dtype=np.float64)
    if len(touch) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    kpd = params.km_per_degree
    wrap = abs(grid.ncols * grid.dx - 360.0) < 1e-9
    cells = (r_hi[touch] - r_lo[touch]) * (c_hi[touch] - c_lo[touch])
    # batches of whole towns (the per-tile summation order stays town order)
    bounds = np.searchsorted(
        np.cumsum(cells), np.arange(batch_cells, int(cells.sum()) + batch_cells, batch_cells)
    )
    start = 0
    for stop in np.unique(np.append(bounds + 1, len(touch))):
        stop = int(min(stop, len(touch)))
        if stop <= start:
            continue
        sel = touch[start:stop]
        start = stop
        town, row, col = _disk_cells(sel, r_lo, r_hi, c_lo, c_hi)
        if wrap:
            col = col % grid.ncols
            inside = np.ones(len(col), dtype=bool)
        else:
            inside = (col >= 0) & (col < grid.ncols)
        dlat_km = (grid.row_center(row) - lat[town]) * kpd
        dlon = grid.col_center(col) - lon[town]
        dlon = np.where(dlon > 180.0, dlon - 360.0, np.where(dlon < -180.0, dlon + 360.0, dlon))
        dlon_km = dlon * kpd * cos_lat[town]
        k = 1.0 - (dlat_km * dlat_km + dlon_km * dlon_km) / (radius[town] * radius[town])
        k = np.where(inside & (k > 0.0), k, 0.0)
        norm = np.bincount(town - sel[0], weights=k, minlength=int(sel[-1] - sel[0] + 1))
        in_band = (row >= row0) & (row < row1) & (k > 0.0)
        ids = grid.tile_id(row[in_band], col[in_band])
        pos = np.searchsorted(tile_ids, ids)
        pos_c = np.minimum(pos, n - 1)
        hit = tile_ids[pos_c] == ids
        t_hit = town[in_band][hit]
        contrib = pop[t_hit] * k[in_band][hit] / norm[t_hit - sel[0]]
        acc += np.bincount(pos_c[hit], weights=contrib, minlength=n)
    idx = np.flatnonzero(acc)
    return idx, acc[idx]


def land_area_total(rows_count: np.ndarray, row_area: np.ndarray, rows_deficit: np.ndarray, samples: int) -> float:
    """``A_c = sum_t f_t a_t`` (land area of a country's tiles), independent of chunking.

    Per row r: ``a_r * (n_r s² - D_r) / s²`` where ``n_r`` counts the row's tiles and
    ``D_r = sum (s² - inside_t)`` over its partial tiles (integers, so the per-row factor is exact); the
    rows are summed with ``math.fsum``.

    >>> land_area_total(np.array([3, 1]), np.array([2.0, 4.0]), np.array([2, 0]), 2)  # 2 * 2.5 + 4 * 1
    9.0
    """
    ss = int(samples) * int(samples)
    lots = rows_count.astype(np.int64) * ss - rows_deficit.astype(np.int64)
    return math.fsum((row_area * lots.astype(np.float64) / float(ss)).tolist())


def proxy_masses_inplace(
    area: np.ndarray,
    kernel_idx: np.ndarray,
    kernel_mass: np.ndarray,
    town_total: float,
    area_sum: float,
    params: ProxyParams,
    land_idx: np.ndarray | None = None,
    land_share: np.ndarray | None = None,
) -> np.ndarray:
    """Tile masses of the proxy: ``f_t (kernel_t + rural_share * P_c * a_t / A_c)``, 0 where ``f_t < tau``.

    ``P_c = 0`` -> ``f_t a_t``.  ``f_t`` is ``land_share`` at ``land_idx`` and 1 elsewhere; ``A_c``
    (``area_sum``) is the land area ``sum f_t a_t`` (:func:`land_area_total`); ``tau`` is
    ``params.min_land_share``.  Overwrites ``area`` and returns it (saves a copy of the largest array).

    >>> proxy_masses_inplace(np.array([1.0, 1.0]), np.array([0]), np.array([9.0]), 10.0, 2.0, ProxyParams()).tolist()
    [9.5, 0.5]
    >>> proxy_masses_inplace(np.array([1.0, 1.0, 1.0]), np.array([0]), np.array([9.0]), 10.0, 2.0, ProxyParams(),
    ...                      np.array([0, 2]), np.array([0.5, 0.125])).tolist()
    [4.75, 0.5, 0.0]
    """
    if town_total > 0.0:
        # A_c = 0 only when no tile has land at all; every mass ends up 0 below then (zero-mass fallback)
        rural = params.rural_share * town_total / area_sum if area_sum > 0.0 else 0.0
        area *= rural
        area[kernel_idx] += kernel_mass
    if land_idx is not None and len(land_idx):
        # f (k + c a) = f k + c (f a): the town share on land plus the rural floor on land (one rounding less)
        area[land_idx] *= land_share
        area[land_idx[land_share < params.min_land_share]] = 0.0
    return area


@dataclass(frozen=True)
class LandStats:
    """What the proxy's land shares did to one country (its S2 run report row)."""

    land_area_m2: float  # A_c = sum f_t a_t
    partial_tiles: int  # tiles with a land share below 1
    tiles_below_min_land_share: int  # tiles given mass 0 (f_t < min_land_share)


def land_shares(runs: Sequence[Runs], offsets: np.ndarray, row: np.ndarray, run_len: np.ndarray, grid: Grid,
                samples: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A country's partial tiles (index among its tiles, lattice count) and its land area ``A_c``.

    ``row``/``run_len`` are the country's runs concatenated in part order (the tile order) and ``offsets``
    the index of each unit's first tile.  The land area is summed per row from integers
    (:func:`land_area_total`), so it does not depend on the units.
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
