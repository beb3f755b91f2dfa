"""S2 tile weights: per-country fixed-decimal weights over the tiles (contract §4), as pure kernels.

Masses by basis: ``uniform`` (1), ``area_m2`` (``pixel_area_m2``), ``population`` (raster value, nodata
-> 0) and ``population_proxy`` (GeoNames towns spread over nearby tiles plus a rural floor, times the
tile's land share, and 0 below a minimum land share so that S6 never gets a site on a sliver of coast;
see :func:`proxy_kernel_mass`, :func:`proxy_masses_inplace` and docs/population-proxy.md).

Quantisation is exact largest remainder (:func:`largest_remainder`): ``K = 10**dp``, ``q_i = m_i K / M``,
``z_i = floor(q_i)``, ``K - sum z`` tiles ranked by (remainder desc, tile_id asc) get +1.  The total ``M`` of
the float64 masses is computed exactly as an integer times a power of two; the bulk of the tiles is
decided in float64 with a certified error bound, and only tiles whose floor or rank is uncertain are
settled with exact integer arithmetic, grouped by identical mass value (so the 42 M tied remainders of
Russia under ``uniform`` cost one big-integer division).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

from .errors import InputError, IntegrityError
from .grid import Grid

if TYPE_CHECKING:
    from .s1_tile_index import Runs

__all__ = [
    "ProxyParams",
    "largest_remainder",
    "country_weights",
    "check_masses",
    "check_monotone",
    "exact_total",
    "raster_masses",
    "proxy_kernel_mass",
    "proxy_masses_inplace",
    "LandStats",
    "country_masses",
    "land_shares",
    "total_as_float",
    "land_area_total",
    "weights_table",
]


# -- masses --------------------------------------------------------------------------------------------


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


def check_masses(masses: np.ndarray, tile_ids, country_iso: str) -> None:
    """E105_NORMALIZATION when a mass is negative or not finite, naming the tiles.

    ``tile_ids`` is an array or a callable returning it (only evaluated for the message).
    """
    bad = ~(masses >= 0) | (masses == np.inf)  # NaN compares False
    if bad.any():
        idx = np.flatnonzero(bad)
        tile_ids = tile_ids() if callable(tile_ids) else tile_ids
        raise InputError(
            "E105_NORMALIZATION",
            f"{len(idx)} tile mass(es) of {country_iso} are negative or not "
            "finite; masses must be finite and >= 0",
            dataset="tile_weights",
            rows=[
                {"country_iso": country_iso, "tile_id": int(tile_ids[i]), "mass": float(masses[i])}
                for i in idx[:50]
            ],
            hint="fix the population raster (nodata value, negative cells)",
        )


def raster_masses(
    rows: np.ndarray, cols: np.ndarray, row0: int, windows: list[tuple[int, np.ndarray]], nodata: float | None
) -> np.ndarray:
    """Raster value at each tile (float64; nodata -> 0).

    Parameters
    ----------
    rows, cols : arrays
        The tiles' raster rows and columns.
    row0 : int
        First row of the window arrays.
    windows : list of (col0, 2-D array)
        Raster windows read for the unit, starting at column ``col0`` and row ``row0``; disjoint, ascending.
    nodata : float or None
        The raster's nodata value (NaN allowed).
    """
    out = np.zeros(len(rows), dtype=np.float64)
    if not len(rows):
        return out
    starts = np.array([c0 for c0, _ in windows], dtype=np.int64)
    which = np.searchsorted(starts, cols.astype(np.int64), side="right") - 1
    for k, (c0, arr) in enumerate(windows):
        sel = np.flatnonzero(which == k)
        vals = arr[rows[sel].astype(np.int64) - row0, cols[sel].astype(np.int64) - c0].astype(np.float64)
        if nodata is not None:
            vals[(vals == nodata) | (np.isnan(vals) & bool(np.isnan(nodata)))] = 0.0
        out[sel] = vals
    return out


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


def country_masses(basis: str, grid: Grid, runs: Sequence[Runs], unit_masses: Sequence, town_total: float,
                   proxy: ProxyParams | None) -> tuple[np.ndarray, LandStats | None]:
    """Mass of every tile of one country by ``basis`` (contract §4), in tile order (its units' in part order).

    Parameters
    ----------
    basis : str
        ``uniform``, ``area_m2``, ``population`` or ``population_proxy``.
    grid : Grid
    runs : sequence of Runs
        The tiles of each unit of the country, in part order (ascending tile_id overall).
    unit_masses : sequence
        What S1 computed per unit for the basis: nothing (``uniform``/``area_m2``), the raster value of each
        tile (``population``: :func:`raster_masses`) or the town kernel ``(tile index, mass)`` of
        :func:`proxy_kernel_mass` (``population_proxy``).
    town_total : float
        ``P_c``, the population of the country's towns (proxy).
    proxy : ProxyParams or None
        The proxy's constants (``population_proxy`` only).

    Returns
    -------
    (float64 masses, LandStats of the proxy or None)
    """
    counts = [r.n_tiles for r in runs]
    n = int(sum(counts))
    if basis == "uniform":
        return np.ones(n, dtype=np.float64), None
    if basis == "population":
        return np.concatenate([m for m, c in zip(unit_masses, counts) if c]), None
    row = np.concatenate([r.row for r in runs]).astype(np.int64)
    run_len = np.concatenate([r.col1.astype(np.int64) - r.col0 for r in runs])
    masses = np.repeat(grid.row_area_m2[row], run_len)
    if basis != "population_proxy":
        return masses, None
    offsets = np.cumsum([0] + counts)
    k_idx = np.concatenate([m[0] + off for m, c, off in zip(unit_masses, counts, offsets[:-1]) if c])
    k_val = np.concatenate([m[1] for m, c in zip(unit_masses, counts) if c])
    l_idx, l_inside, a_c = land_shares(runs, offsets, row, run_len, grid, proxy.land_samples)
    share = l_inside.astype(np.float64) / float(proxy.land_samples**2)
    masses = proxy_masses_inplace(masses, k_idx, k_val, town_total, a_c, proxy, l_idx, share)
    return masses, LandStats(a_c, int(len(l_idx)), int((share < proxy.min_land_share).sum()))


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


def total_as_float(total: tuple[int, int]) -> float:
    """An exact mass total ``(numerator, exponent)`` (:func:`exact_total`) as a float (inf above float64)."""
    num, e = total
    return math.ldexp(num, e) if num.bit_length() + e < 1024 else math.inf


# -- exact largest remainder -------------------------------------------------------------------------

_CHUNK = 1 << 18  # elements per pass: the temporaries of a chunk stay in the CPU cache


def _split(masses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """m = a * 2**e with integer 0 <= a < 2**53 (exact for every finite float64 >= 0), from the bits."""
    v = np.ascontiguousarray(masses, dtype=np.float64).view(np.int64)
    field = v >> 52  # -0.0 has the sign bit: field < 0, mantissa 0 -> contributes nothing
    a = v & ((1 << 52) - 1)
    a |= (field > 0).astype(np.int64) << 52
    return a, np.maximum(field, 1) - 1075


def exact_total(masses: np.ndarray) -> tuple[int, int]:
    """The exact sum of non-negative float64 masses as ``(numerator, exponent)``: ``sum = num * 2**exp``.

    Mantissas (53-bit integers) are split into 27+26-bit halves and summed per binary exponent with
    ``np.bincount`` over chunks of 2**18 values, so every float64 partial sum is an exact integer (< 2**53);
    Python ints combine the per-exponent sums.

    >>> from fractions import Fraction
    >>> num, e = exact_total(np.array([0.1, 0.2]))
    >>> Fraction(num) * Fraction(2) ** e == Fraction(0.1) + Fraction(0.2)
    True
    """
    if not len(masses):
        return 0, 0
    smallest = float(np.min(masses, where=masses > 0, initial=np.inf))
    if smallest == np.inf:
        return 0, 0
    field_min = int(np.array(smallest).view(np.int64) >> 52)
    e_min = max(field_min, 1) - 1075
    hi_tot = lo_tot = None
    for s in range(0, len(masses), _CHUNK):
        a, e = _split(masses[s : s + _CHUNK])
        b = np.maximum(e - e_min, 0)  # zeros (and -0.0) land in bin 0 with a == 0
        hi = np.bincount(b, weights=(a >> 26).astype(np.float64), minlength=2100)
        lo = np.bincount(b, weights=(a & ((1 << 26) - 1)).astype(np.float64), minlength=2100)
        # 2**27 * 2**18 < 2**53: each chunk's per-bin sums are exact; int64 totals hold 2**36 chunks
        hi_tot = hi.astype(np.int64) if hi_tot is None else hi_tot + hi.astype(np.int64)
        lo_tot = lo.astype(np.int64) if lo_tot is None else lo_tot + lo.astype(np.int64)
    total = 0
    for k in np.flatnonzero(hi_tot | lo_tot).tolist():
        total += ((int(hi_tot[k]) << 26) + int(lo_tot[k])) << k
    return (total, e_min) if total else (0, 0)


def largest_remainder(masses: np.ndarray, dp: int, total: tuple[int, int] | None = None) -> np.ndarray:
    """Exact largest-remainder quantisation of masses to integers summing to ``10**dp``.

    Parameters
    ----------
    masses : float64 array
        Finite, >= 0, not all zero, in ascending tile_id order (ties go to the lower index).
    dp : int
        Decimal places, 0..18.
    total : (int, int), optional
        :func:`exact_total` of ``masses`` when the caller has it already.

    Returns
    -------
    uint64 array of weights, ``sum == 10**dp``.

    Examples
    --------
    >>> largest_remainder(np.array([1.0, 1.0, 1.0]), 1).tolist()
    [4, 3, 3]
    >>> largest_remainder(np.array([0.7, 0.3]), 0).tolist()
    [1, 0]
    """
    n = len(masses)
    K = 10 ** int(dp)
    if n == 0:
        raise IntegrityError("E103_ZERO_COUNTRY", "largest_remainder needs at least one tile (bug in caller)")
    if masses.min() == masses.max():
        # all masses equal: q = K/n for every tile; remainders all tie -> first tiles by tile_id
        z, s = divmod(K, n)
        w = np.full(n, z, dtype=np.uint64)
        w[:s] += np.uint64(1)
        return w
    num, e_min = total if total is not None else exact_total(masses)
    # q = m * (K / M): K/M rounded once; M is rounded once (correctly rounded big-int division), the
    # product once: |q - q_exact| <= 3 * 2**-53 * q (+ 2**-1074 underflow) < delta.
    bits = num.bit_length()
    shift = 0
    if -900 < e_min + bits < 900:  # then K / M (K <= 2**60) is finite and normal
        m_total = float(num << e_min) if e_min >= 0 else num / (1 << -e_min)  # correctly rounded
    else:  # extreme magnitudes: scale masses by an exact power of two first
        shift = -(e_min + bits)
        m_total = num / (1 << bits)
    c = float(K) / m_total
    q_max = float(np.ldexp(masses.max(), shift)) * c  # rounding is monotone: the largest q
    delta = (q_max + 1.0) * 2.0**-50 + 1e-300
    # One cache-friendly pass: floors (int64, reused as the weights), remainders, ambiguous floors.
    w = np.empty(n, dtype=np.uint64)
    zi = w.view(np.int64)
    r = np.empty(n, dtype=np.float64)
    amb_parts = []
    for s in range(0, n, _CHUNK):
        m = masses[s : s + _CHUNK]
        q = (np.ldexp(m, shift) if shift else m) * c
        z = np.floor(q)
        zi[s : s + _CHUNK] = z  # q <= K <= 10**18 < 2**63
        rc = q - z  # exact
        r[s : s + _CHUNK] = rc
        amb_c = np.flatnonzero((rc < delta) | (rc > 1.0 - delta))
        if len(amb_c):
            amb_parts.append(amb_c + s)

    def exact(idx: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Exact (z, remainder numerator over num) for tiles idx, computed once per distinct mass."""
        vals, inv = np.unique(masses[idx], return_inverse=True)
        va, ve = _split(vals)
        zz = np.empty(len(vals), dtype=np.int64)
        rr: list[int] = []
        for k, (ak, ek) in enumerate(zip(va.tolist(), ve.tolist())):
            big = (ak << max(ek - e_min, 0)) * K  # zero masses: ak == 0
            qk, rk = divmod(big, num)
            zz[k] = qk
            rr.append(rk)
        return zz, rr, inv

    if amb_parts:
        amb = np.concatenate(amb_parts)
        zz, rr, inv = exact(amb)
        zi[amb] = zz[inv]
        r[amb] = np.array([x / num for x in rr], dtype=np.float64)[inv]
    need = K - int(zi.sum())
    if not 0 <= need <= n:
        raise IntegrityError(
            "E105_NORMALIZATION",
            f"largest remainder needs {need} bonus units for {n} tiles; "
            "this is a bug in segment1b, please report it",
        )
    if need == 0:
        return w
    t = _kth_largest(r, need)
    sure_parts, band_parts = [], []
    for s in range(0, n, _CHUNK):
        rc = r[s : s + _CHUNK]
        sure_parts.append(np.flatnonzero(rc > t + 2 * delta) + s)
        band_parts.append(np.flatnonzero((rc >= t - 2 * delta) & (rc <= t + 2 * delta)) + s)
    sure, band = np.concatenate(sure_parts), np.concatenate(band_parts)
    take = need - len(sure)
    if take < 0 or take > len(band):
        raise IntegrityError(
            "E105_NORMALIZATION",
            "largest remainder cut-off is inconsistent; this is a bug in segment1b, please report it",
        )
    w[sure] += np.uint64(1)
    if take:
        _, rr, inv = exact(band)
        # rank distinct remainders descending; stable sort keeps tile_id ascending inside a rank
        levels = {v: i for i, v in enumerate(sorted(set(rr), reverse=True))}  # equal remainders, equal rank
        rank = np.array([levels[v] for v in rr], dtype=np.int64)
        chosen = band[np.argsort(rank[inv], kind="stable")[:take]]
        w[chosen] += np.uint64(1)
    return w


def _kth_largest(r: np.ndarray, k: int, bins: int = 1 << 16) -> float:
    """The k-th largest value of ``r`` (values in [0, 1)), via a histogram pass then a small partition.

    Same answer as ``np.partition(r, len(r) - k)[len(r) - k]`` without copying ``r``.
    """
    counts = np.zeros(bins, dtype=np.int64)
    for s in range(0, len(r), _CHUNK):
        b = np.minimum((r[s : s + _CHUNK] * bins).astype(np.int64), bins - 1)
        counts += np.bincount(b, minlength=bins)
    above = np.cumsum(counts[::-1])[::-1]  # above[b] = values in bins >= b
    b_star = int(np.flatnonzero(above >= k)[-1])
    k_in = k - (int(above[b_star + 1]) if b_star + 1 < bins else 0)
    vals = np.concatenate(
        [
            rc[np.minimum((rc * bins).astype(np.int64), bins - 1) == b_star]
            for rc in (r[s : s + _CHUNK] for s in range(0, len(r), _CHUNK))
        ]
    )
    return float(np.partition(vals, len(vals) - k_in)[len(vals) - k_in])


def check_monotone(masses: np.ndarray, weights: np.ndarray, tile_ids, country_iso: str) -> None:
    """E106_MONOTONICITY (internal invariant): a heavier tile never gets a smaller weight.

    Per distinct weight, the lightest and heaviest mass (``np.minimum.at``/``np.maximum.at`` over weights
    below 2**16, a sort for the at most ``K / 2**16`` heavier tiles); the invariant holds when no weight's
    lightest tile is lighter than the heaviest tile of a smaller weight.  ``tile_ids`` may be a callable
    returning the ids (only needed for the message).
    """
    if len(masses) < 2 or masses.min() == masses.max():
        return
    cap = 1 << 16
    small = weights < np.uint64(cap)
    all_small = bool(small.all())
    w16 = (weights if all_small else weights[small]).astype(np.int64)
    m16 = masses if all_small else masses[small]
    lo = np.full(cap, np.inf)
    hi = np.full(cap, -np.inf)
    np.minimum.at(lo, w16, m16)
    np.maximum.at(hi, w16, m16)
    present = np.flatnonzero(hi >= lo)
    gw, gmin, gmax = present.astype(np.uint64), lo[present], hi[present]
    if not all_small:
        big = np.flatnonzero(~small)
        order = np.argsort(weights[big], kind="stable")
        wb, mb = weights[big][order], masses[big][order]
        starts = np.flatnonzero(np.r_[True, wb[1:] != wb[:-1]])
        gw = np.r_[gw, wb[starts]]
        gmin = np.r_[gmin, np.minimum.reduceat(mb, starts)]
        gmax = np.r_[gmax, np.maximum.reduceat(mb, starts)]
    prev_max = np.maximum.accumulate(gmax)
    bad = np.flatnonzero(gmin[1:] < prev_max[:-1]) + 1
    if len(bad):
        g = int(bad[0])
        light = np.flatnonzero((weights == gw[g]) & (masses == gmin[g]))[0]
        heavy = np.flatnonzero((weights < gw[g]) & (masses > gmin[g]))[0]
        ids = tile_ids() if callable(tile_ids) else tile_ids
        raise IntegrityError(
            "E106_MONOTONICITY",
            f"a heavier tile of {country_iso} got a smaller weight; this is "
            "a bug in segment1b, please report it",
            dataset="tile_weights",
            rows=[
                {
                    "country_iso": country_iso,
                    "tile_id": int(ids[i]),
                    "mass": float(masses[i]),
                    "weight_fp": int(weights[i]),
                }
                for i in (heavy, light)
            ],
        )


def country_weights(
    masses: np.ndarray, tile_ids, dp: int, country_iso: str, *, check: bool = True
) -> tuple[np.ndarray, bool]:
    """Weights of one country's tiles: E105 checks, zero-mass fallback, exact largest remainder, E106.

    Parameters
    ----------
    masses : float64 array
        One per tile, in ascending tile_id order.
    tile_ids : uint64 array or callable
        Ascending ids, or a function returning them (only called for error messages).
    dp : int
    country_iso : str

    Returns
    -------
    (weight_fp uint64 array, zero_mass_fallback, exact mass total as (numerator, exponent))

    Raises
    ------
    InputError
        ``E105_NORMALIZATION`` for negative or non-finite masses (naming tiles).
    IntegrityError
        ``E105_NORMALIZATION`` if the weights do not sum to ``10**dp``; ``E106_MONOTONICITY``.
    """
    check_masses(masses, tile_ids, country_iso)
    total = exact_total(masses)
    fallback = total[0] == 0
    if fallback:
        masses = np.ones(len(masses), dtype=np.float64)
        total = (len(masses), 0)
    w = largest_remainder(masses, dp, total)
    w_sum = int(w.sum(dtype=np.uint64))
    if w_sum != 10**dp:
        raise IntegrityError(
            "E105_NORMALIZATION",
            f"weights of {country_iso} sum to {w_sum}, expected 10^{dp}; "
            "this is a bug in segment1b, please report it",
            dataset="tile_weights",
            rows=[{"country_iso": country_iso, "sum_weight_fp": w_sum, "K": 10**dp}],
        )
    if check:
        check_monotone(masses, w, tile_ids, country_iso)
    return w, fallback, total


def weights_table(
    country_iso: str, tile_ids: np.ndarray, weights: np.ndarray, dp: int, fallback: bool
) -> pa.Table:
    """tile_weights rows (contract §2) for tiles in tile_id order."""
    from .s1_tile_index import string_column

    n = len(tile_ids)
    return pa.table(
        {
            "country_iso": string_column(country_iso, n),
            "tile_id": pa.array(tile_ids, type=pa.uint64()),
            "weight_fp": pa.array(weights, type=pa.uint64()),
            "dp": pa.array(np.full(n, dp, dtype=np.uint32)),
            "zero_mass_fallback": pa.array(np.full(n, fallback, dtype=bool)),
        }
    )
